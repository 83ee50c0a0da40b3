"""The container image tooling's own logic (`make image`, `make image-smoke`), without
buildah: commands, parsing of what buildah/podman/apt/proc print, and the smoke's verdicts.
The real build and start run in CI after the tests (`.ci/run`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from k8s.validate import load_objects, render
from segrec.settings import PROJECT_ROOT, Settings
from serving.container import BASE_IMAGE, SERVING_IMAGE
from serving.container.build import (
    CONTAINERFILE,
    DEFAULT_MIRROR,
    DEFAULT_SECURITY_MIRROR,
    Mirrors,
    apt_mirrors,
    base_build_command,
    containerize_command,
    debootstrap_command,
    extra_ca_certificates,
    image_notes,
    project_version,
    serving_ref,
)
from serving.container.oci import (
    ImageError,
    ImageInfo,
    Layer,
    descendants,
    layers_of,
    parse_env,
    process_table,
    serve_process,
    short_command,
    tagged_images,
)
from serving.container.smoke import (
    BENTOML_HOME,
    DATA_DIR,
    DATA_VOLUME,
    SECRETS,
    WRITABLE_ROOTS,
    container_env,
    load_failures,
    not_for_serving,
    package_problems,
    requirement_names,
    run_command,
    trained_data,
    unexpected_writes,
)
from training.container import (
    APP_DIR,
    REQUIREMENTS_IN_IMAGE,
    RUN_AS_UID,
    TRAINING_IMAGE,
    VENV_DIR,
)
from training.container.build import APP_PATHS, assemble_context, training_ref
from training.container.build import CONTAINERFILE as TRAINING_CONTAINERFILE
from training.container.build import REQUIREMENTS as TRAINING_REQUIREMENTS
from training.container.build import build_command as training_build_command
from training.container.smoke import (
    JobContainer,
    Volume,
    applicable_requirements,
    expected_image,
    job_containers,
    job_data,
    not_in_image,
    random_secrets,
    writes_outside,
)
from training.container.smoke import package_problems as training_package_problems
from training.container.smoke import run_command as training_run_command

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_the_image_is_tagged_with_the_project_version(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\nversion = "2.3.4"\n')
    assert project_version(pyproject) == "2.3.4"
    assert serving_ref("2.3.4") == "localhost/segrec-serving:2.3.4"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project_version())  # the real pyproject.toml
    assert SERVING_IMAGE == "localhost/segrec-serving"  # what the k8s overlays deploy


def test_extra_ca_certificates_are_the_pem_crt_files_found_recursively(tmp_path: Path) -> None:
    (tmp_path / "corp").mkdir()
    (tmp_path / "corp" / "proxy.crt").write_text(PEM)
    (tmp_path / "custom.crt").write_text(PEM)
    (tmp_path / "notes.crt").write_text("not a certificate")
    (tmp_path / "other.pem").write_text(PEM)  # update-ca-certificates reads only .crt
    found = extra_ca_certificates((tmp_path, tmp_path / "missing"))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["corp/proxy.crt", "custom.crt"]


def test_apt_mirrors_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a snapshot, commented out\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "off.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://aaa.example/debian\nSuites: bookworm\n"
    )
    (tmp_path / "sources.list.d" / "nodesource.sources.disabled-by-farm").write_text(
        "Types: deb\nURIs: http://aaa.example/node\nSuites: bookworm\n"
    )
    assert apt_mirrors(tmp_path) == Mirrors(
        "http://mirror.example/debian", "http://mirror.example/debian-security"
    )


def test_apt_mirrors_from_one_line_sources_and_the_default(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert apt_mirrors(tmp_path) == Mirrors("http://mirror.example/debian", DEFAULT_SECURITY_MIRROR)
    assert apt_mirrors(tmp_path / "nothing") == Mirrors(DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR)


def test_the_base_image_build_passes_exactly_the_args_the_containerfile_declares() -> None:
    command = base_build_command(Path("/ctx"), Mirrors("http://m/debian", "http://m/sec"), "0.9.9")
    passed = {command[i + 1].split("=", 1)[0] for i, a in enumerate(command) if a == "--build-arg"}
    declared = set(re.findall(r"^ARG (\w+)", CONTAINERFILE.read_text(), flags=re.M))
    assert passed == declared
    assert "UV_VERSION=0.9.9" in command and "--pull=never" in command
    assert command[command.index("-t") + 1] == BASE_IMAGE == "localhost/python:3.11-slim"
    assert command[2:4] == ["--isolation", "chroot"]
    assert debootstrap_command(Path("/r"), "http://m/debian") == [
        "debootstrap", "--variant=minbase", "bookworm", "/r", "http://m/debian",
    ]  # fmt: skip


def test_containerize_uses_buildah_in_a_chroot_and_no_pull_option() -> None:
    command = containerize_command(Path("/venv/bin/bentoml"), "segrec:20261123t010203")
    assert command == [
        "/venv/bin/bentoml", "containerize", "--backend", "buildah",
        "--opt", "isolation=chroot", "segrec:20261123t010203",
    ]  # fmt: skip
    assert not any("pull" in part for part in command)  # buildah 1.28 misreads --pull never


# What `podman history --format json --no-trunc` printed for a real build, newest first.
HISTORY = [
    {"id": "17c9", "CreatedBy": '/bin/sh -c #(nop) ENTRYPOINT [ "/home/bentoml/e.sh" ]', "size": 0},
    {
        "id": "aef5",
        "CreatedBy": "|4 BENTO_PATH=/home/bentoml/bento BENTO_USER=bentoml BENTO_USER_GID=1034 "
        "BENTO_USER_UID=1034 /bin/sh -c chmod +x /home/bentoml/e.sh",
        "size": 7680,
    },
    {
        "id": "2dea",
        "CreatedBy": "/bin/sh -c #(nop) COPY dir:a75ada5dfb23102"
        + "0" * 49
        + " in ./ ",
        "size": 1_900_000,
    },
    {
        "id": "20ed",
        "CreatedBy": "|4 A=1 B=2 C=3 D=4 /bin/sh -c if [ -d ./src ];     then uv pip install",
        "size": 643_000_000,
    },
    {"id": "<missing>", "CreatedBy": "/bin/sh -c #(nop) ENV LANG=C.UTF-8", "size": 0},
    {
        "id": "e9d1",
        "CreatedBy": "/bin/sh -c #(nop) ADD file:3e9517fea39b" + "1" * 52 + " in /",
        "size": 203_796_480,
    },
]  # fmt: skip


def test_layers_are_the_history_entries_with_content_bottom_first() -> None:
    layers = layers_of(HISTORY)
    assert [layer.size_bytes for layer in layers] == [203_796_480, 643_000_000, 1_900_000, 7680]
    assert [layer.created_by for layer in layers] == [
        "ADD file:3e9517fea39b in /",
        "RUN if [ -d ./src ]; then uv pip install",
        "COPY dir:a75ada5dfb23 in ./",
        "RUN chmod +x /home/bentoml/e.sh",
    ]
    assert short_command("/bin/sh -c " + "x" * 200, width=20) == "RUN " + "x" * 13 + "..."


def test_tagged_images_and_image_environment() -> None:
    listing = [
        {
            "id": "sha256:aa",
            "names": ["localhost/segrec:20261123t010203", "localhost/segrec-serving:0.1.0"],
        },
        {"id": "bb", "names": ["localhost/segrec:20261122t010203"]},
        {"id": "cc", "names": None},
    ]
    assert tagged_images(listing, "localhost/segrec") == {
        "localhost/segrec:20261123t010203": "aa",
        "localhost/segrec:20261122t010203": "bb",
    }
    assert parse_env(["A=1", "B=x=y", "junk"]) == {"A": "1", "B": "x=y"}


def test_the_serve_process_is_found_under_buildah_run() -> None:
    table = {
        100: (1, ["buildah", "run", "--isolation", "chroot", "ctr", "--", "/e.sh"]),
        101: (100, ["buildah-chroot-runtime"]),
        102: (101, ["buildah-chroot-exec", "/e.sh", "--port", "3000"]),
        103: (102, ["/app/.venv/bin/python", "/app/.venv/bin/bentoml", "serve", "/bento"]),
        104: (103, ["/app/.venv/bin/python", "-m", "_bentoml_impl.worker.service"]),
        200: (1, ["/other/bentoml", "serve", "elsewhere"]),  # not ours
    }
    assert descendants(table, 100) == [101, 102, 103, 104]
    assert serve_process(table, 100) == 103
    assert serve_process(table, 104) is None


def test_process_table_reads_parents_past_odd_command_names(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (a (weird) name) S 7 42 42 0 -1\n")
    (tmp_path / "42" / "cmdline").write_bytes(b"bentoml\0serve\0/bento\0")
    (tmp_path / "self").mkdir()
    assert process_table(tmp_path) == {42: (7, ["bentoml", "serve", "/bento"])}


def test_the_image_must_hold_only_the_serving_requirements(tmp_path: Path) -> None:
    requirements = (
        "# via feast\nfeast==0.50.0\nuvicorn[standard]==0.30 ; sys_platform != 'win32'\n"
        "    # via bentoml\nPyYAML==6.0\ntqdm==4.6\n--index-url https://x\n"
    )
    required = requirement_names(requirements)
    assert required == {"feast", "uvicorn", "pyyaml", "tqdm"}
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[dependency-groups]\n"
        'training = ["scikit-learn>=1.5", "pandera[pandas]>=0.20", "tqdm>=4"]\n'
        'serving = ["bentoml>=1.4,<1.5"]\n'
        'dev = ["pytest>=8"]\n'
    )
    forbidden = not_for_serving(required, pyproject)
    assert forbidden == {"scikit-learn", "pandera", "pytest"}  # tqdm: Feast needs it
    assert package_problems(["Feast", "uvicorn", "PyYAML", "tqdm"], required, forbidden) == []
    problems = package_problems(["feast", "scikit_learn", "requests"], required, forbidden)
    assert problems == [
        "training or dev packages in the image: scikit-learn",
        "packages not in the Bento's requirements: requests",
    ]
    # The real project: the training libraries are never serving requirements.
    assert {"scikit-learn", "scikit-surprise", "implicit"} <= not_for_serving({"feast"})


def test_writes_are_allowed_only_under_tmp_the_bentoml_home_and_the_data() -> None:
    written = [
        "/etc/hosts",  # buildah run's own
        "/run/.containerenv",
        f"{BENTOML_HOME}/prometheus_multiproc_dir/counter_1.db",
        f"{DATA_DIR}/events/live/events-20261123-h-1.jsonl",
        "/tmp/x",
        "/home/bentoml/bento/src/segrec/__pycache__/bundle.cpython-311.pyc",
        "/home/bentoml/bento/state.json",
        "/var/lib/segrecx/file",
    ]
    assert unexpected_writes(written) == (
        ["/home/bentoml/bento/state.json", "/var/lib/segrecx/file"],
        1,
    )


def test_the_smoke_starts_the_entrypoint_as_the_deployment_does() -> None:
    command = run_command("ctr", {"A": "1"}, ("/e.sh",), 4321)
    assert command == [
        "buildah", "run", "--isolation", "chroot", "--network", "host", "-e", "A=1",
        "ctr", "--", "/e.sh", "serve", "--host", "127.0.0.1", "--port", "4321",
    ]  # fmt: skip


K8S = PROJECT_ROOT / "k8s"


def _k8s_file(relative: str) -> Path:
    path = K8S / relative
    if not path.is_file():
        pytest.skip(f"no {path.relative_to(PROJECT_ROOT)}")
    return path


def test_the_smoke_environment_is_the_kubernetes_dev_overlays() -> None:
    """The container runs in `make image-smoke` as the serving pod of k8s/overlays/dev."""
    config = dict(
        line.split("=", 1)
        for line in _k8s_file("base/config.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    dev = yaml.safe_load(_k8s_file("overlays/dev/kustomization.yaml").read_text())
    for generator in dev.get("configMapGenerator", []):
        if generator["name"] == "segrec-config":
            config.update(literal.split("=", 1) for literal in generator.get("literals", []))
    deployment = yaml.safe_load(_k8s_file("base/serving/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (serving,) = [c for c in pod["containers"] if c["name"] == "serving"]
    literal = {e["name"]: str(e["value"]) for e in serving.get("env", []) if "value" in e}
    secret = {e["name"] for e in serving.get("env", []) if "valueFrom" in e}

    env = container_env("token", "secret")
    assert {k: v for k, v in env.items() if k not in SECRETS} == {**config, **literal}
    assert set(SECRETS) <= secret  # SEGREC_REDIS_URL too, which SQLite does not use
    mounts = {m["mountPath"] for m in serving["volumeMounts"]}
    assert mounts == set(WRITABLE_ROOTS) == {"/tmp", BENTOML_HOME, DATA_VOLUME}
    assert env["SEGREC_DATA_DIR"] == DATA_DIR and DATA_DIR.startswith(DATA_VOLUME + "/")
    assert serving["args"][0] == "serve"  # the entrypoint's `bentoml serve` branch
    assert pod["securityContext"]["runAsUser"] == 1034  # BentoML's bentoml user
    # Unset, SEGREC_FEAST_REPO is the Bento's own copy, where bentofile.yaml puts it.
    assert "SEGREC_FEAST_REPO" not in env
    assert "feature_repo/feature_store.yaml" in (PROJECT_ROOT / "bentofile.yaml").read_text()


def test_every_overlay_deploys_the_image_make_image_tags() -> None:
    overlays = sorted(K8S.glob("overlays/*/kustomization.yaml"))
    if not overlays:
        pytest.skip("no k8s overlays")
    repository = SERVING_IMAGE.rsplit("/", 1)[1]  # segrec-serving, in whichever registry
    for path in overlays:
        images = yaml.safe_load(path.read_text()).get("images", [])
        served = [i for i in images if i["name"] == repository]
        assert served, f"{path}: no images entry for {repository}"
        for image in served:
            assert image["newName"].rsplit("/", 1)[-1] == repository, path
            assert str(image["newTag"]) == project_version(), path


def test_load_failures_are_read_from_the_server_log() -> None:
    log = (
        "2026-11-23T04:49:38+0000 [INFO] [:1] Service loaded\n"
        "2026-11-23T04:49:38+0000 [ERROR] [:1] not ready: FeatureServiceNotFoundException: "
        "Feature service customer_serving_v3 does not exist in project segrec (trace=c0b4)\n"
    )
    assert load_failures(log) == [
        "FeatureServiceNotFoundException: Feature service customer_serving_v3 does not exist "
        "in project segrec"
    ]
    assert load_failures("all good") == []
    # The words the smoke looks for are the service's own.
    assert '"not ready: %s"' in (PROJECT_ROOT / "serving" / "service.py").read_text()


def test_the_smoke_asks_for_trained_data(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ImageError, match="make train"):
        trained_data(settings)
    for name in ("feast/registry.db", "feast/online.db", "features/manifest.json"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text("x")
    with pytest.raises(ImageError, match="bundles/"):
        trained_data(settings)
    (tmp_path / "data" / "bundles" / "bundle-20261123T000000").mkdir(parents=True)
    assert trained_data(settings) == (tmp_path / "data").resolve()


def test_image_notes_name_what_bentoml_did_differently() -> None:
    info = ImageInfo(
        ref="r",
        id="i",
        size_bytes=1,
        user="bentoml",
        entrypoint=("/e.sh",),
        env={"PATH": "/usr/bin"},
        layers=(
            Layer(645_000_000, "RUN apt-get install -q -y " + "x " * 60 + "build-essential git"),
        ),
    )
    notes = image_notes(info)
    assert len(notes) == 2
    assert notes[0].startswith("645.0 MB of compilers") and "OPENBLAS_NUM_THREADS" in notes[1]
    quiet = ImageInfo("r", "i", 1, "bentoml", (), {"OPENBLAS_NUM_THREADS": "1"}, ())
    assert image_notes(quiet) == []


# ---- the training image (`make image-training`, `make image-training-smoke`) -------------
def test_the_training_image_build_passes_the_args_its_containerfile_declares() -> None:
    command = training_build_command(Path("/ctx"), "2.3.4")
    passed = dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "--build-arg")
    text = TRAINING_CONTAINERFILE.read_text()
    declared = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    assert set(passed) == set(declared)
    assert passed["BASE_IMAGE"] == declared["BASE_IMAGE"] == BASE_IMAGE  # serving's base
    assert passed["SEGREC_UID"] == declared["SEGREC_UID"] == str(RUN_AS_UID)
    assert passed["VERSION"] == "2.3.4"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, flags=re.M)
    assert command[command.index("-t") + 1] == training_ref("2.3.4")
    assert training_ref("2.3.4") == f"{TRAINING_IMAGE}:2.3.4" == "localhost/segrec-training:2.3.4"
    assert command[2:4] == ["--isolation", "chroot"] and "--pull=never" in command
    assert "--no-cache" not in command
    assert "--no-cache" in training_build_command(Path("/ctx"), "2.3.4", cache=False)


def test_the_training_containerfile_keeps_the_jobs_contract() -> None:
    """What the manifests and the smoke rely on: the numeric non-root user, the CLI as the
    entrypoint, the project in /app, wheels only, no uv cache in a layer."""
    text = TRAINING_CONTAINERFILE.read_text()
    instructions = re.findall(r"^([A-Z]+) (.*)$", text, flags=re.M)
    last = dict(instructions)  # the last of each instruction
    assert last["USER"] == "${SEGREC_UID}:${SEGREC_UID}"
    assert json.loads(last["ENTRYPOINT"]) == [f"{VENV_DIR}/bin/segrec"]
    assert last["WORKDIR"] == APP_DIR
    assert f"COPY app/ {APP_DIR}/" in text
    assert f"COPY requirements-training.txt {REQUIREMENTS_IN_IMAGE}" in text
    installs = re.findall(r"uv pip install[^;]*", text.replace("\\\n", " "))
    assert len(installs) == 2 and all("--no-cache" in line for line in installs)
    assert "--require-hashes" in installs[0] and "--only-binary :all:" in installs[0]
    assert "--no-deps --editable /app" in installs[1]
    assert "build-essential" not in text and "gcc" not in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text  # a read-only root filesystem


def test_make_image_training_exports_the_jobs_dependency_groups() -> None:
    lines = (PROJECT_ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()
    rule = lines.index("build/requirements-training.txt: pyproject.toml uv.lock")
    export = next(line for line in lines[rule + 1 :] if "export" in line).split()
    groups = {export[i + 1] for i, word in enumerate(export) if word == "--group"}
    # `segrec train` saves the bundle as a BentoML model: the serving group too.
    assert groups == {"training", "features", "serving"}
    assert {"--locked", "--no-default-groups", "--no-emit-project"} <= set(export)
    assert "--no-hashes" not in export  # the image installs with --require-hashes
    assert export[export.index("-o") + 1] == "$@"
    assert TRAINING_REQUIREMENTS == PROJECT_ROOT / "build" / "requirements-training.txt"
    target = next(i for i, line in enumerate(lines) if line.startswith("image-training:"))
    assert "build/requirements-training.txt" in lines[target]
    assert "-m training.container build" in lines[target + 1]


def test_the_training_context_holds_the_source_and_the_requirements(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    with pytest.raises(ImageError, match="make image-training"):
        assemble_context(tmp_path / "ctx", requirements)
    requirements.write_text("numpy==2.0 \\\n    --hash=sha256:00\n")
    assemble_context(tmp_path / "ctx", requirements)
    context = tmp_path / "ctx"
    assert (context / "Containerfile").read_text() == TRAINING_CONTAINERFILE.read_text()
    assert (context / "requirements-training.txt").read_text() == requirements.read_text()
    assert sorted(p.name for p in (context / "app").iterdir()) == sorted(APP_PATHS)
    for name in ("segrec/cli.py", "training/train/pipeline.py", "feature_repo/feature_store.yaml"):
        assert (context / "app" / name).is_file(), name
    assert not list(context.rglob("__pycache__")) and not list(context.rglob("*.pyc"))


def _job(**changes: object) -> JobContainer:
    fields: dict[str, object] = {
        "workload": "CronJob/segrec-retrain",
        "name": "train",
        "image": "localhost:5001/segrec-training:0.1.0",
        "command": ("segrec", "train"),
        "env": (("SEGREC_DATA_DIR", "/var/lib/segrec/data"),),
        "mounts": (
            ("/var/lib/segrec", Volume("data", "persistentVolumeClaim"), False),
            ("/opt/scripts", Volume("script", "configMap", (("r.py", "print(1)"),)), True),
        ),
        "user": (1034, 1034),
    }
    return JobContainer(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_job_container_runs_as_its_pod_user_with_its_volumes() -> None:
    binds = {"/var/lib/segrec": Path("/s/pvc"), "/opt/scripts": Path("/s/pod/script")}
    assert training_run_command("ctr", _job(), binds) == [
        "buildah", "run", "--isolation", "chroot", "--network", "host", "--user", "1034:1034",
        "--volume", "/s/pvc:/var/lib/segrec", "--volume", "/s/pod/script:/opt/scripts:ro",
        "-e", "SEGREC_DATA_DIR=/var/lib/segrec/data", "ctr", "--", "segrec", "train",
    ]  # fmt: skip
    assert expected_image(_job(), "0.1.0") is None
    assert "not segrec-training:0.2.0" in str(expected_image(_job(), "0.2.0"))
    assert expected_image(_job(image="r/segrec-serving:0.1.0"), "0.1.0") is not None


def test_the_jobs_run_as_the_dev_overlay_renders_them() -> None:
    """The command contract between k8s/ and the image: what the smoke runs, read from the
    rendered dev overlay (the same function the smoke uses)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is needed to render the overlay")
    secrets = random_secrets()
    jobs = job_containers(load_objects(render("dev")), secrets)
    assert [job.label for job in jobs] == [
        "Job/segrec-feast-apply/feast-apply",
        "CronJob/segrec-materialise/materialise",
        "CronJob/segrec-retrain/train",
        "CronJob/segrec-retrain/reload",
    ]
    assert [job.command for job in jobs][1:3] == [("segrec", "features"), ("segrec", "train")]
    for job in jobs:
        env = dict(job.env)
        assert expected_image(job, project_version()) is None
        assert job.user == (RUN_AS_UID, RUN_AS_UID)
        assert job.command[0] in {"segrec", "python"}  # both in the image's venv, on PATH
        mounts = {path: volume.kind for path, volume, _ in job.mounts}
        if job.name == "reload":
            ((_, volume, read_only),) = job.mounts
            assert read_only and volume.kind == "configMap"
            script = PROJECT_ROOT / "k8s" / "base" / "jobs" / "reload_serving.py"
            assert dict(volume.files) == {"reload_serving.py": script.read_text()}
            assert env == {"SEGREC_ADMIN_TOKEN": secrets["SEGREC_ADMIN_TOKEN"]}
            continue
        assert mounts == {"/var/lib/segrec": "persistentVolumeClaim", "/tmp": "emptyDir"}
        assert env["SEGREC_FEAST_REPO"] == f"{APP_DIR}/feature_repo"  # the image's source
        assert env["SEGREC_DATA_DIR"].startswith("/var/lib/segrec/")
        assert env["HOME"] == env["TMPDIR"] == "/tmp"
        assert env["SEGREC_ONLINE_STORE"] == "sqlite"  # dev: no Redis needed to run them
        assert env["SEGREC_REDIS_URL"] == secrets["SEGREC_REDIS_URL"]


def test_the_training_image_holds_exactly_its_requirements() -> None:
    requirements = (
        "# via feast\n"
        "numpy==2.4.6 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "async-timeout==5.0.1 ; python_full_version < '3.11.3' \\\n    --hash=sha256:cc\n"
        "cffi==2.1.1 ; implementation_name == 'pypy' \\\n    --hash=sha256:dd\n"
        "scikit-learn==1.7 \\\n    --hash=sha256:ee\n"
    )
    old = {"python_full_version": "3.11.2", "implementation_name": "cpython"}
    new = {"python_full_version": "3.11.9", "implementation_name": "cpython"}
    assert applicable_requirements(requirements, old) == {"numpy", "async-timeout", "scikit-learn"}
    assert applicable_requirements(requirements, new) == {"numpy", "scikit-learn"}
    required = {"numpy", "scikit-learn"}
    assert training_package_problems(["NumPy", "scikit_learn", "segrec"], required, set()) == []
    assert training_package_problems(["numpy", "pytest", "six"], required, {"pytest"}) == [
        "required but not installed: scikit-learn",
        "load-test or dev packages in the image: pytest",
        "packages not in the requirements: six",
    ]
    assert {"locust", "pytest", "ruff"} <= not_in_image()  # the real pyproject's groups


def test_the_jobs_may_write_only_on_their_volumes(tmp_path: Path) -> None:
    written = [
        "/etc/hosts",  # buildah run's own
        "/tmp/matplotlib/fontlist.json",
        "/var/lib/segrec/data/bundles/bundle-1/manifest.json",
        "/app/training/__pycache__/x.cpython-311.pyc",
        "/var/lib/segrecx/file",
    ]
    assert writes_outside(written, ["/tmp", "/var/lib/segrec"]) == [
        "/app/training/__pycache__/x.cpython-311.pyc",
        "/var/lib/segrecx/file",
    ]
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ImageError, match="make data SIZE=tiny"):
        job_data(settings)
    for name in ("clean/manifest.json", "features/customer_segments.parquet"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text("x")
    assert job_data(settings) == (tmp_path / "data").resolve()


def test_a_job_without_a_command_or_a_missing_job_is_refused() -> None:
    pod = {"securityContext": {"runAsUser": 1034}, "containers": [{"name": "x", "image": "i:1"}]}
    job = {
        "kind": "Job",
        "metadata": {"name": "segrec-feast-apply"},
        "spec": {"template": {"spec": pod}},
    }
    with pytest.raises(ImageError, match="segrec-feast-apply/x: no command"):
        job_containers([job], random_secrets())
    with pytest.raises(ImageError, match="renders 0 Job/segrec-feast-apply"):
        job_containers([], random_secrets())
