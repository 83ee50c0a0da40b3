"""The data layer: raw sources -> validated, cleaned, pseudonymised canonical tables."""
