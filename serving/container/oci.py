"""Small wrappers around buildah and podman, and the pure parsing behind them.

buildah builds and runs; podman only inspects (``podman run`` does not work on this
machine). Both use the same containers storage: the machine's default (overlay here), or
whatever ``CONTAINERS_STORAGE_CONF`` names (``serving/container/storage-vfs.conf`` where
overlay is not available).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Debian packages the image commands need; installed when missing (as root).
APT_PACKAGES = {"buildah": "buildah", "podman": "podman", "debootstrap": "debootstrap"}


class ImageError(RuntimeError):
    """A step of the image build or smoke run failed; the message says which and why."""


def say(message: str) -> None:
    print(message, flush=True)


def run(command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Run ``command`` with its output on this terminal (the build's progress)."""
    say("$ " + shlex.join(command))
    result = subprocess.run(list(command), env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        raise ImageError(f"{command[0]} {command[1]} failed (exit {result.returncode})")


def capture(command: Sequence[str], *, check: bool = True) -> str:
    """``command``'s standard output; its error output goes into the exception."""
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ImageError(
            f"{shlex.join(command)} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def ensure_tools(names: Sequence[str] = tuple(APT_PACKAGES)) -> None:
    """Install the missing ones of buildah, podman and debootstrap from Debian's packages
    (as root, like ``make setup`` does for redis-server), or say how to."""
    missing = [APT_PACKAGES[name] for name in names if shutil.which(name) is None]
    if not missing:
        return
    install = ["apt-get", "install", "-y", "-qq", *missing]
    if os.geteuid() != 0:
        raise ImageError(
            f"{', '.join(missing)} missing: sudo apt-get update && {shlex.join(install)}"
        )
    say(f"installing {' '.join(missing)} (Debian packages)")
    run(["apt-get", "update", "-qq"])
    run(install, env={"DEBIAN_FRONTEND": "noninteractive"})


def image_exists(ref: str) -> bool:
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", ref], capture_output=True, check=False
    )
    return result.returncode == 0


def images_named(name: str) -> dict[str, str]:
    """``name:tag`` -> full image id for every tag of ``name`` in the local storage."""
    # Without --no-trunc buildah lists 12-character ids, which never equal podman's full
    # ``Id``: a rebuild that reproduced the same image then looked like a new one.
    listing = capture(["buildah", "images", "--json", "--no-trunc"])
    return tagged_images(json.loads(listing or "null") or [], name)


def tagged_images(listing: list[dict[str, Any]], name: str) -> dict[str, str]:
    """From ``buildah images --json``: ``name:tag`` -> id (no ``sha256:``, as podman's
    ``Id``) for the tags of repository ``name``."""
    found: dict[str, str] = {}
    for image in listing:
        for ref in image.get("names") or []:
            if isinstance(ref, str) and ref.rsplit(":", 1)[0] == name:
                found[ref] = str(image["id"]).removeprefix("sha256:")
    return found


@dataclass(frozen=True)
class Layer:
    size_bytes: int
    created_by: str


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    id: str
    size_bytes: int
    user: str
    entrypoint: tuple[str, ...]
    env: dict[str, str]
    layers: tuple[Layer, ...]


def inspect_image(ref: str) -> ImageInfo:
    """Id, size, user, entrypoint, environment and the layers (``podman history``)."""
    inspected = json.loads(capture(["podman", "image", "inspect", ref]))[0]
    history = json.loads(capture(["podman", "history", "--format", "json", "--no-trunc", ref]))
    config = inspected.get("Config") or {}
    return ImageInfo(
        ref=ref,
        id=str(inspected["Id"]),
        size_bytes=int(inspected["Size"]),
        user=str(config.get("User") or "root"),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        env=parse_env(config.get("Env") or []),
        layers=layers_of(history),
    )


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> ``{"A": "1", "B": "x=y"}``."""
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def layers_of(history: list[dict[str, Any]]) -> tuple[Layer, ...]:
    """The layers with content, bottom first, from ``podman history --format json`` (which
    lists newest first, one entry per instruction; ENV, ARG, EXPOSE... add no content)."""
    layers = []
    for entry in reversed(history):
        size = int(str(entry.get("size") or 0))
        if size > 0:
            created_by = str(entry.get("CreatedBy") or entry.get("createdBy") or "")
            layers.append(Layer(size, short_command(created_by)))
    return tuple(layers)


def short_command(created_by: str, width: int | None = None) -> str:
    """A Dockerfile instruction as history records it, made readable: no build-argument
    prefix (``|3 A=1 B=2 C=3 ...``), no ``/bin/sh -c``, no ``#(nop)``, short content hashes,
    whitespace squeezed; at most ``width`` characters when given."""
    text = created_by.strip()
    prefix = re.match(r"\|(\d+) ", text)
    if prefix:  # ``|N`` is followed by N ``name=value`` words, then the command
        text = text[prefix.end() :].split(" ", int(prefix.group(1)))[-1]
    text = text.removeprefix("/bin/sh -c ").removeprefix("#(nop) ").strip()
    if not re.match(r"[A-Z]+ ", text):
        text = "RUN " + text
    text = re.sub(r"\b(dir|file):([0-9a-f]{12})[0-9a-f]{52}\b", r"\1:\2", text)
    text = re.sub(r"\s+", " ", text)
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def megabytes(size_bytes: int) -> str:
    """Decimal megabytes (kilobytes below one), as podman and registries count them."""
    if size_bytes < 1_000_000:
        return f"{size_bytes / 1e3:,.1f} kB"
    return f"{size_bytes / 1e6:,.1f} MB"


def process_table(proc: Path = Path("/proc")) -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) for every process this machine shows."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry.name)] = (
            parent,
            [a.decode(errors="replace") for a in cmdline.split(b"\0") if a],
        )
    return table


def descendants(table: Mapping[int, tuple[int, list[str]]], root: int) -> list[int]:
    """Every descendant of ``root``, nearest first (breadth first)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        level = sorted(child for pid in frontier for child in children.get(pid, []))
        found.extend(level)
        frontier = level
    return found


def serve_process(table: Mapping[int, tuple[int, list[str]]], root: int) -> int | None:
    """The ``bentoml serve`` process under ``root`` (the ``buildah run`` process): the one to
    SIGTERM. Signalling ``buildah run`` itself would orphan the server's workers."""
    for pid in descendants(table, root):
        args = table[pid][1]
        for i, arg in enumerate(args[:-1]):
            if Path(arg).name == "bentoml" and args[i + 1] == "serve":
                return pid
    return None


def process_uid(pid: int, proc: Path = Path("/proc")) -> int:
    """The real user id of ``pid``."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ImageError(f"no Uid line for process {pid}")


def remove_stale_containers(prefix: str) -> None:
    """Containers named ``<prefix><pid>`` whose process is gone: a smoke run killed before
    its cleanup left them."""
    listing = json.loads(capture(["buildah", "containers", "--json"]) or "null") or []
    for entry in listing:
        name = str(entry.get("containername", ""))
        pid = name.removeprefix(prefix)
        if name.startswith(prefix) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            capture(["buildah", "rm", name], check=False)
            say(f"removed stale container {name}")


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a run's log, for an error message."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def print_image(info: ImageInfo, also: str = "") -> None:
    say(f"\nImage {info.ref}" + (f" (also {also})" if also else ""))
    say(f"  id:     {info.id}")
    say(f"  size:   {megabytes(info.size_bytes)}")
    say(f"  user:   {info.user}   entrypoint: {' '.join(info.entrypoint)}")
    say(f"  layers ({len(info.layers)}, bottom first):")
    for layer in info.layers:
        say(f"    {megabytes(layer.size_bytes):>11}  {short_command(layer.created_by, 90)}")


def report_build(
    info: ImageInfo,
    *,
    removed: Sequence[str],
    total_seconds: float,
    base_seconds: float | None,
    next_step: str,
    also: str = "",
) -> None:
    """What a build prints: the image, the images it replaced, the time, what to run next.
    ``base_seconds`` is None when the base image was already there."""
    print_image(info, also=also)
    if removed:
        say(f"  removed older images: {', '.join(removed)}")
    base_note = "present" if base_seconds is None else f"built in {base_seconds:.0f} s"
    say(f"  time:   {total_seconds:.0f} s in all (base image {base_note})")
    say(f"  next:   {next_step}")
