"""``make image``: the local base image (built once), the Bento containerised with buildah,
tagged ``localhost/segrec-serving:<version>``, then its id, size and layers printed.

The base image stands in for Docker Hub's ``python:3.11-slim``, which BentoML's generated
Dockerfile starts from: ``debootstrap --variant=minbase bookworm`` from the machine's Debian
mirror, imported with ``podman import``, then ``Containerfile.base`` adds Python 3.11,
venv, pip, uv and the machine's extra CA certificates (a TLS-intercepting proxy would
otherwise fail every pip and uv download inside the build).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from segrec.settings import PROJECT_ROOT, Settings
from serving.container import BASE_IMAGE, DEBIAN_SUITE, ROOTFS_IMAGE, SERVING_IMAGE
from serving.container.oci import (
    ImageError,
    ImageInfo,
    capture,
    ensure_tools,
    image_exists,
    images_named,
    inspect_image,
    megabytes,
    report_build,
    run,
    say,
)

CONTAINERFILE = Path(__file__).with_name("Containerfile.base")
# Where Debian keeps locally added CA certificates (update-ca-certificates reads them).
EXTRA_CA_DIRS = (Path("/usr/local/share/ca-certificates"),)
APT_DIR = Path("/etc/apt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Layers caching (buildah's default is one layer per build and no cache): a rebuild after
# a code change redoes only the last COPY of the Bento, not the packages.
BUILD_ENV = {"BUILDAH_LAYERS": "true"}
BENTO_NAME = "segrec"


@dataclass(frozen=True)
class Mirrors:
    debian: str = DEFAULT_MIRROR
    security: str = DEFAULT_SECURITY_MIRROR


def project_version(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> str:
    """The image tag: the project's version in pyproject.toml."""
    return str(tomllib.loads(pyproject.read_text())["project"]["version"])


def serving_ref(version: str) -> str:
    return f"{SERVING_IMAGE}:{version}"


def extra_ca_certificates(dirs: tuple[Path, ...] = EXTRA_CA_DIRS) -> list[Path]:
    """The machine's locally added CA certificates (``*.crt`` holding a PEM certificate),
    which the base image must trust too."""
    found = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.crt")):
            try:
                pem = path.read_text(errors="replace")
            except OSError:
                continue
            if path.is_file() and "-----BEGIN CERTIFICATE-----" in pem:
                found.append(path)
    return found


def apt_mirrors(apt_dir: Path = APT_DIR, suite: str = DEBIAN_SUITE) -> Mirrors:
    """The Debian and security mirrors this machine's apt uses for ``suite``
    (``sources.list`` one-line entries and deb822 ``*.sources``); deb.debian.org otherwise."""
    entries: list[tuple[str, list[str]]] = []  # (uri, suites) of every enabled "deb" source
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            entries.extend(_one_line_sources(path.read_text()))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        entries.extend(_deb822_sources(path.read_text()))
    debian = next((uri for uri, suites in entries if suite in suites), DEFAULT_MIRROR)
    security = next(
        (uri for uri, suites in entries if f"{suite}-security" in suites), DEFAULT_SECURITY_MIRROR
    )
    return Mirrors(debian.rstrip("/"), security.rstrip("/"))


def _one_line_sources(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0])  # comments and [options]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def _deb822_sources(text: str) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        entries.extend((uri, suites) for uri in fields.get("uris", "").split())
    return entries


def debootstrap_command(rootfs: Path, mirror: str, suite: str = DEBIAN_SUITE) -> list[str]:
    return ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror]


def base_build_command(context: Path, mirrors: Mirrors, uv_version: str) -> list[str]:
    return [
        "buildah", "build", "--isolation", "chroot", "--network", "host", "--layers",
        "--pull=never",
        "--build-arg", f"ROOTFS_IMAGE={ROOTFS_IMAGE}",
        "--build-arg", f"DEBIAN_MIRROR={mirrors.debian}",
        "--build-arg", f"SECURITY_MIRROR={mirrors.security}",
        "--build-arg", f"UV_VERSION={uv_version}",
        "-f", str(context / CONTAINERFILE.name),
        "-t", BASE_IMAGE,
        str(context),
    ]  # fmt: skip


def containerize_command(bentoml: Path, bento_tag: str) -> list[str]:
    """BentoML's own build, with buildah (no pull option: buildah 1.28 misreads BentoML's
    ``--pull never``; ``FROM python:3.11-slim`` resolves to the local base image anyway)."""
    return [
        str(bentoml),
        "containerize",
        "--backend",
        "buildah",
        "--opt",
        "isolation=chroot",
        bento_tag,
    ]


def build_base(uv_version: str, *, rebuild: bool = False) -> bool:
    """Build ``localhost/python:3.11-slim`` unless it exists; True when it was built."""
    if image_exists(BASE_IMAGE) and not rebuild:
        say(f"base image {BASE_IMAGE}: present, not rebuilt (--rebuild-base to force)")
        return False
    mirrors = apt_mirrors()
    certificates = extra_ca_certificates()
    say(
        f"base image {BASE_IMAGE}: debootstrap {DEBIAN_SUITE} from {mirrors.debian}, "
        f"{len(certificates)} extra CA certificate(s)"
        + (f" ({', '.join(p.name for p in certificates)})" if certificates else "")
    )
    with tempfile.TemporaryDirectory(prefix="segrec-base-image-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        run(debootstrap_command(rootfs, mirrors.debian))
        say(f"$ tar -C {rootfs} -c . | podman import - {ROOTFS_IMAGE}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", ROOTFS_IMAGE], stdin=tar.stdout)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise ImageError(
                f"importing the debootstrap'd root filesystem as {ROOTFS_IMAGE} failed"
            )
        shutil.rmtree(rootfs)  # 200 MB, in the image now

        context = Path(scratch) / "context"
        (context / "extra-ca").mkdir(parents=True)
        shutil.copy(CONTAINERFILE, context / CONTAINERFILE.name)
        for index, certificate in enumerate(certificates):  # unique names, .crt kept
            shutil.copy(certificate, context / "extra-ca" / f"{index:02d}-{certificate.name}")
        run(base_build_command(context, mirrors, uv_version), env=BUILD_ENV)
    capture(["buildah", "rmi", ROOTFS_IMAGE], check=False)  # its layer stays under the base
    return True


def newest_bento(settings: Settings) -> str:
    """The newest ``segrec`` Bento (``make bento`` builds it just before)."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_store.resolve()))
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.bentos.get(f"{BENTO_NAME}:latest").tag)
    except NotFound:
        raise ImageError(
            f"no {BENTO_NAME} Bento in {os.environ['BENTOML_HOME']}: run `make bento`"
        ) from None


def containerize(bento_tag: str) -> str:
    """``bentoml containerize`` the Bento; returns the image BentoML tagged."""
    bentoml = Path(sys.executable).parent / "bentoml"
    run(containerize_command(bentoml, bento_tag), env=BUILD_ENV)
    built = f"localhost/{bento_tag}"
    if not image_exists(built):
        raise ImageError(f"bentoml containerize reported success but {built} is not in storage")
    return built


def remove_older(keep: str) -> list[str]:
    """Remove the images of older Bentos (``localhost/segrec:*`` but ``keep``): each holds
    its own top layers. The layer cache stays."""
    removed = []
    for ref in images_named(f"localhost/{BENTO_NAME}"):
        if ref != keep and capture(["buildah", "rmi", ref], check=False):
            removed.append(ref)
    return removed


def build_image(settings: Settings, uv_version: str, *, rebuild_base: bool = False) -> ImageInfo:
    ensure_tools()
    started = time.monotonic()
    built_base = build_base(uv_version, rebuild=rebuild_base)
    base_seconds = time.monotonic() - started
    bento_tag = newest_bento(settings)
    say(f"containerising Bento {bento_tag} (BENTOML_HOME={os.environ['BENTOML_HOME']})")
    built = containerize(bento_tag)
    target = serving_ref(project_version())
    run(["buildah", "tag", built, target])
    removed = remove_older(keep=built)
    info = inspect_image(target)
    report_build(
        info,
        also=built,
        removed=removed,
        total_seconds=time.monotonic() - started,
        base_seconds=base_seconds if built_base else None,
        next_step="make image-smoke (starts it and asks it for a carousel)",
    )
    return info


def image_notes(info: ImageInfo) -> list[str]:
    """What the image shows that bentofile.yaml meant otherwise (BentoML 1.4 behaviours)."""
    notes = []
    compilers = [layer for layer in info.layers if "build-essential" in layer.created_by]
    if compilers:
        notes.append(
            f"{megabytes(sum(layer.size_bytes for layer in compilers))} of compilers and git: "
            "BentoML 1.4 always runs its Debian default install (build-essential, git) for "
            "bentofile builds; every serving package installs from wheels"
        )
    if "OPENBLAS_NUM_THREADS" not in info.env:
        notes.append(
            "OPENBLAS_NUM_THREADS is not set in the image: BentoML 1.4 ignores bentofile "
            "docker.env (top-level `envs:` reaches the image); set it in the Deployment"
        )
    return notes
