"""Words the generator draws from: categories, product nouns, names, places.

Product nouns are category specific so titles and descriptions carry category signal
that a content model can learn; names and streets are few enough that different people
share names, which is what makes duplicate detection non-trivial.
"""

from __future__ import annotations

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "Electronics": ("headphones", "charger", "speaker", "power bank", "webcam", "keyboard",
                    "mouse", "smartwatch", "earbuds", "monitor", "router", "tablet case"),
    "Home & Kitchen": ("frying pan", "kettle", "toaster", "knife set", "blender", "mug set",
                       "cutting board", "saucepan", "coffee grinder", "tea towel", "colander"),
    "Groceries": ("coffee beans", "olive oil", "pasta", "granola", "tea bags", "dark chocolate",
                  "rice", "peanut butter", "honey", "oat milk", "tomato sauce", "crackers"),
    "Beauty": ("face cream", "shampoo", "lip balm", "serum", "body lotion", "hand cream",
               "conditioner", "sunscreen", "face mask", "perfume"),
    "Fashion": ("t-shirt", "jeans", "hoodie", "sneakers", "scarf", "jacket", "dress",
                "socks", "belt", "cap", "sweater"),
    "Sports & Outdoors": ("yoga mat", "running shoes", "water bottle", "dumbbells",
                          "tent", "backpack", "cycling gloves", "resistance band", "headlamp"),
    "Toys & Games": ("puzzle", "board game", "building blocks", "plush bear", "card game",
                     "toy car", "doll house", "kite", "science kit"),
    "Books": ("novel", "cookbook", "travel guide", "biography", "poetry collection",
              "graphic novel", "history book", "atlas"),
    "Garden": ("seed kit", "garden hose", "pruning shears", "plant pot", "compost",
               "watering can", "bird feeder", "garden gloves"),
    "Pet Supplies": ("dog food", "cat litter", "chew toy", "pet bed", "leash",
                     "cat scratcher", "fish food", "pet shampoo"),
    "Health": ("vitamins", "protein powder", "first aid kit", "thermometer",
               "electrolyte tabs", "omega 3", "sleep aid"),
    "Office": ("notebook", "gel pens", "desk lamp", "stapler", "planner", "sticky notes",
               "file folders", "desk organiser"),
}

CATEGORY_PHRASES: dict[str, str] = {
    "Electronics": "Reliable electronics and gadgets, USB-C, wireless, long battery life.",
    "Home & Kitchen": "Everyday kitchenware for cooking, baking and serving at home.",
    "Groceries": "Pantry staple, fresh taste, organic ingredients, family size pack.",
    "Beauty": "Skincare and personal care, gentle formula for all skin types.",
    "Fashion": "Clothing and apparel, soft cotton, modern fit, machine washable.",
    "Sports & Outdoors": "Fitness and outdoor gear for training, hiking and camping.",
    "Toys & Games": "Fun toys and games for kids and families, safe and educational.",
    "Books": "Paperback edition, bestselling author, a great read and gift.",
    "Garden": "Gardening tools and supplies for plants, lawns and patios.",
    "Pet Supplies": "For dogs and cats, healthy pets, vet approved.",
    "Health": "Health and wellness supplement, daily support, vegan friendly.",
    "Office": "Office and stationery supplies for work, school and study.",
}

ADJECTIVES = ("Classic", "Premium", "Eco", "Compact", "Deluxe", "Essential", "Pro", "Smart",
              "Organic", "Everyday", "Ultra", "Signature", "Original", "Lite")

BRAND_SYLLABLES = ("nor", "vel", "ka", "tri", "zen", "lum", "bo", "sta", "qui", "ra", "mo",
                   "dex", "fin", "gal", "hux", "ori")

FIRST_NAMES = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Sophia", "Grace", "Freya",
    "Emily", "Ella", "Chloe", "Sophie", "Ruby", "Evie", "Alice", "Hannah", "Lucy", "Sarah",
    "Anna", "Laura", "Marie", "Julia", "Emma", "Lea", "Clara", "Nora", "Zoe", "Eva",
    "Oliver", "George", "Noah", "Arthur", "Leo", "Harry", "Oscar", "Jack", "Charlie",
    "Thomas", "James", "William", "Henry", "Lucas", "Daniel", "Samuel", "Joseph", "David",
    "Paul", "Peter", "Lukas", "Felix", "Max", "Jonas", "Louis", "Hugo", "Adam", "Ethan",
    "Ryan", "Sean", "Patrick", "Michael", "Conor", "Mateo", "Liam", "Finn", "Elias", "Jan",
)

LAST_NAMES = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes",
    "Edwards", "Green", "Hall", "Wood", "Harris", "Martin", "Jackson", "Clarke", "Murphy",
    "Kelly", "Byrne", "Ryan", "O'Brien", "Walsh", "Muller", "Schmidt", "Schneider", "Fischer",
    "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Dubois", "Durand", "Moreau",
    "Laurent", "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "de Jong", "Jansen", "de Vries",
    "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos", "Vos", "Peters",
    "Hendriks", "Dekker", "Brouwer", "Kowalski", "Nowak", "Novak", "Rossi", "Russo", "Ferrari",
)

STREETS = ("High", "Station", "Main", "Church", "Park", "Victoria", "Green", "Manor",
           "Kings", "Queens", "Mill", "School", "North", "South", "West", "New", "Chapel",
           "London", "Albert", "Grange", "Linden", "Oak", "Elm", "Beech", "Willow", "Cedar")

STREET_SUFFIXES = ("Street", "Road", "Avenue", "Lane", "Close", "Way", "Drive")
STREET_ABBREVIATIONS = {"Street": "St", "Road": "Rd", "Avenue": "Ave", "Lane": "Ln",
                        "Close": "Cl", "Way": "Wy", "Drive": "Dr"}

# (country, city, postcode prefix)
CITIES = (
    ("GB", "London", "LN"), ("GB", "Manchester", "MA"), ("GB", "Leeds", "LS"),
    ("GB", "Bristol", "BS"), ("GB", "Glasgow", "GL"), ("IE", "Dublin", "DB"),
    ("IE", "Cork", "CK"), ("DE", "Berlin", "BE"), ("DE", "Hamburg", "HH"),
    ("DE", "Munich", "MU"), ("FR", "Paris", "PA"), ("FR", "Lyon", "LY"),
    ("NL", "Amsterdam", "AM"), ("NL", "Utrecht", "UT"),
)

EMAIL_DOMAINS = ("mail.example", "post.example", "inbox.example", "web.example")
OCCUPATIONS = ("professional", "student", "retired", "self-employed", "homemaker",
               "technician", "manager", "other")
