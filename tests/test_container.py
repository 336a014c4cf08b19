"""The image and the Kubernetes examples, checked without a container engine (docker/check.sh builds
and runs the image for real; docs/container.md).

The Dockerfile's stages: ``wheel`` builds the package from the source tree, ``runtime`` installs the
wheel (the default target), ``test`` adds the dev extra and the tests. The checks here would have
caught an image that does not build (a build input copied after the install) and one whose tests
cannot run there (tests that read files only the repository checkout has).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from sononet.batch import resolve_job
from sononet.cli.batch import cli
from sononet.jobs import load_spec

pytestmark = pytest.mark.checkout
REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


# --- the Dockerfile, parsed --------------------------------------------------------------------


@dataclass
class Stage:
    name: str | None
    base: str
    ops: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, op: str) -> list[str]:
        return [a for o, a in self.ops if o == op]

    def env(self) -> dict[str, str]:
        return {k: v for a in self.args("ENV") for k, v in (pair.split("=", 1) for pair in shlex.split(a))}


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*\s*", " ", text)
    stages: list[Stage] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        op, arg = line.split(None, 1)
        if op.upper() == "FROM":
            words = arg.split()
            stages.append(Stage(words[2] if len(words) == 3 and words[1].upper() == "AS" else None, words[0]))
        elif stages:
            stages[-1].ops.append((op.upper(), arg))
    return stages


STAGES = parse_dockerfile((REPO / "Dockerfile").read_text())
NAMED = {s.name: s for s in STAGES if s.name}
IGNORED = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

# A RUN that builds or installs the package from the source tree: `pip wheel .`, `pip install -e '.[dev]'`.
BUILDS_THE_SOURCE = re.compile(r"pip (?:wheel|install)\b[^&;|]*?(?:\s-e\s|\s['\"]?\.(?:\[\w+\])?['\"]?(?:\s|$))")


def ignored(path: str, patterns: list[str] = IGNORED) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch(p, pat.removeprefix("**/")) or fnmatch(p, pat) for p in prefixes for pat in patterns)


def build_inputs() -> set[str]:
    """Every file and folder the package build reads: pyproject.toml's readme, licence files and
    package folders, and the setuptools and pip files beside it."""
    project, setuptools = PYPROJECT["project"], PYPROJECT["tool"]["setuptools"]
    inputs = {"pyproject.toml", project["readme"], *project.get("license-files", [])}
    inputs |= set(setuptools.get("package-dir", {}).values()) | {
        p.split(".")[0] for p in setuptools.get("packages", [])
    }
    return inputs | {n for n in ("setup.py", "setup.cfg", "MANIFEST.in", "constraints.txt") if (REPO / n).exists()}


def missing_before_the_build(stage: Stage, inputs: set[str], patterns: list[str] = IGNORED) -> list[str] | None:
    """The build inputs (and scripts the build runs) that ``stage`` has not copied, or that
    .dockerignore drops, when it first builds the package; None when it never does."""
    copied: list[str] = []
    for op, arg in stage.ops:
        if op == "COPY" and "--from" not in arg:
            copied += [w for w in shlex.split(arg)[:-1] if not w.startswith("--")]
        elif op == "RUN" and BUILDS_THE_SOURCE.search(arg):
            needed = inputs | set(re.findall(r"\b(docker/[\w./-]+\.py)\b", arg))
            covered = [n for n in needed if any(s.rstrip("/") in (".", "") or (n + "/").startswith(s.rstrip("/") + "/")
                                                for s in copied)]  # fmt: skip
            return sorted(n for n in needed if n not in covered or ignored(n, patterns))
    return None


# The Dockerfile as it stood when the image did not build: jobs/ (package data) copied after the install.
UNBUILDABLE = """
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sononet ./sononet
COPY kernels ./kernels
RUN pip install -e '.[dev]'
COPY jobs ./jobs
COPY tests ./tests
"""


def test_the_wheel_stage_has_every_build_input_before_it_builds() -> None:
    assert {"pyproject.toml", "README.md", "sononet", "kernels", "jobs"} <= build_inputs()
    assert missing_before_the_build(NAMED["wheel"], build_inputs()) == []
    (old,) = parse_dockerfile(UNBUILDABLE)
    assert "jobs" in (missing_before_the_build(old, build_inputs()) or [])  # the check sees the old mistake
    assert missing_before_the_build(NAMED["wheel"], build_inputs(), [*IGNORED, "kernels"]) == ["kernels"]
    for src in (w for a in NAMED["wheel"].args("COPY") for w in shlex.split(a)[:-1]):
        assert (REPO / src).exists()


def test_the_runtime_installs_the_built_wheel_without_the_dev_extra_or_the_source() -> None:
    runtime = NAMED["runtime"]
    assert missing_before_the_build(runtime, build_inputs()) is None  # never builds from a source tree
    assert runtime.args("COPY") and all(a.startswith("--from=wheel ") for a in runtime.args("COPY"))  # no source
    assert not runtime.args("ADD")
    installs = [a for a in runtime.args("RUN") if "pip install" in a]
    assert installs and all("[dev]" not in a and " -e " not in a for a in installs)
    assert any(re.search(r"pip install --no-deps /wheels/sononet-\*\.whl", a) for a in installs)
    assert STAGES[-1].base == "runtime" and not STAGES[-1].ops  # the default target is the runtime


def test_the_runtime_runs_as_any_user_read_only_and_keeps_its_caches_in_a_volume() -> None:
    runtime, scripts = NAMED["runtime"], PYPROJECT["project"]["scripts"]
    entry, cmd = json.loads(runtime.args("ENTRYPOINT")[-1]), json.loads(runtime.args("CMD")[-1])
    assert entry == ["sononet-batch"] and scripts[entry[0]] == "sononet.cli.batch:main"
    assert load_spec(cmd[0])[0] == cmd[0] == "train-all"
    assert runtime.args("USER")[-1] not in ("root", "0") and runtime.args("WORKDIR")[-1] == "/work"
    env, volumes = runtime.env(), set(json.loads(runtime.args("VOLUME")[-1]))
    assert env["SONONET_WORKDIR"] == "/work" and volumes == {"/data", "/work", "/cache"}
    caches = [env[k] for k in ("HF_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME")]
    assert all(c == "/cache" or c.startswith("/cache/") for c in caches)
    made_writable = " ".join(a for a in runtime.args("RUN") if "chmod 1777" in a)
    assert all(c in made_writable.split() for c in ["/work", *caches])  # any uid writes them
    assert "import matplotlib.font_manager" in " ".join(runtime.args("RUN"))  # the font list, built once
    assert "libsndfile1" in " ".join(runtime.args("RUN"))


def test_the_build_context_keeps_data_and_runs_out() -> None:
    for heavy in ("runs", "data", "results", ".git", ".venv", "work", "build", "x.parquet", "sononet/__pycache__"):
        assert ignored(heavy), f".dockerignore lets {heavy} into the build context"
    assert not ignored("tests") and not ignored("docker/requirements.py")


# --- the tests in the test image -------------------------------------------------------------


def _in_test_image() -> set[str]:
    """What the test stage copies beside tests/ (its WORKDIR holds nothing else of the repository)."""
    return {Path(w).name for a in NAMED["test"].args("COPY") for w in shlex.split(a)[:-1]}


def unmarked_checkout_readers(source: str, available: set[str]) -> list[str]:
    """Tests in ``source`` that read a repository path outside ``available`` without the ``checkout``
    marker: a path ``ROOT / "name" ...`` off a module-level name built from ``__file__``, read in the
    test, in a helper it calls or a fixture it takes (at any depth), or at import."""
    tree = ast.parse(source)
    marked = lambda node: "checkout" in ast.unparse(node)  # noqa: E731  (a decorator list or pytestmark)
    if any(isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n.targets[0]) and marked(n) for n in tree.body):
        return []

    def is_root(expr: str) -> bool:  # Path(__file__).resolve().parents[1], or .parent.parent
        return "__file__" in expr and ("parents[1]" in expr or "parent.parent" in expr)

    roots = {t.id for n in tree.body if isinstance(n, ast.Assign) and is_root(ast.unparse(n.value))
             for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip

    def reads(node: ast.AST) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant):
                left = ast.unparse(n.left)
                if (left in roots or is_root(left)) and str(n.right.value).split("/")[0] not in available:
                    return True
        return False

    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    uses = {name: {n.id for n in ast.walk(f) if isinstance(n, ast.Name)} | {a.arg for a in f.args.args}
            for name, f in functions.items()}  # fmt: skip
    readers = {name for name, f in functions.items() if reads(f)}
    while grown := {name for name in functions if uses[name] & readers} - readers:  # helpers of helpers
        readers |= grown
    at_import = any(reads(n) for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    bad = []
    for name, f in functions.items():
        if not name.startswith("test"):
            continue
        if (at_import or name in readers) and not any(marked(d) for d in f.decorator_list):
            bad.append(name)
    return bad


def test_the_test_image_holds_only_tests_that_can_run_there() -> None:
    test = NAMED["test"]
    assert test.base == "runtime" and "tests" in _in_test_image()
    entry = json.loads(test.args("ENTRYPOINT")[-1])
    assert entry[:3] == ["python", "-m", "pytest"] and "no:cacheprovider" in entry  # /app is not writable there
    assert any("[dev]" in a for a in test.args("RUN"))
    available = _in_test_image()
    bad = {
        str(path.relative_to(REPO)): names
        for path in sorted((REPO / "tests").rglob("*.py"))
        if (names := unmarked_checkout_readers(path.read_text(), available))
    }
    assert not bad, f"tests that read the checkout need @pytest.mark.checkout (they cannot run in the image): {bad}"


def test_the_scan_finds_an_unmarked_reader() -> None:
    source = """
from pathlib import Path
import pytest
ROOT = Path(__file__).resolve().parents[1]
def readme():
    return (ROOT / "README.md").read_text()
def test_helper():
    assert readme()
def test_direct():
    assert (ROOT / "results" / "demo").is_dir()
@pytest.mark.checkout
def test_marked():
    assert readme()
def test_config():
    assert (ROOT / "pyproject.toml").exists()
"""
    assert unmarked_checkout_readers(source, {"tests", "pyproject.toml"}) == ["test_helper", "test_direct"]
    assert unmarked_checkout_readers("import pytest\npytestmark = pytest.mark.checkout\n" + source, set()) == []


# --- Kubernetes ------------------------------------------------------------------------------

MANIFESTS = sorted((REPO / "jobs" / "k8s").glob("*.yaml"))
# Pod Security Standards, "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards)
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}  # fmt: skip


def pod_spec(doc: dict) -> dict:
    job = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return job["template"]["spec"]


def restricted_violations(pod: dict) -> list[str]:
    """Where ``pod`` breaks the restricted Pod Security Standard (its baseline rules included), plus a
    writable root file system, which this project asks for too."""
    bad, sc = [], pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(f"{key} is set")
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']} is of type {sorted(set(v) - {'name'})}")
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        csc, name = c.get("securityContext", {}), c["name"]
        caps = csc.get("capabilities", {})
        if csc.get("privileged") or csc.get("windowsOptions", {}).get("hostProcess"):
            bad.append(f"{name} is privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities.drop lacks ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"} or set(caps.get("add", [])) - BASELINE_CAPABILITIES:
            bad.append(f"{name} adds capabilities {caps['add']}")
        if not csc.get("runAsNonRoot", sc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot is not true")
        if csc.get("runAsUser", sc.get("runAsUser")) == 0:
            bad.append(f"{name} runs as uid 0")
        seccomp = csc.get("seccompProfile", sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile is {seccomp}, not RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name} uses a host port")
        if csc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem is not true")
    return bad


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes_and_meet_the_restricted_pod_security_standard(path: Path) -> None:
    import kubernetes_validate

    doc = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(doc, "1.30", strict=True)  # the oldest supported minor still in its schema set
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    pod = pod_spec(doc)
    assert restricted_violations(pod) == []
    assert pod["terminationGracePeriodSeconds"] >= 30  # SIGTERM -> a step, a checkpoint, exit (docs/container.md)
    (container,) = pod["containers"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    runtime = NAMED["runtime"]
    assert {"/work", "/tmp", "/cache"} <= writable  # what a read-only root leaves the job to write
    assert runtime.env()["NUMBA_CACHE_DIR"].startswith("/cache/") and runtime.env()["HF_HOME"].startswith("/cache/")


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda p, c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (lambda p, c: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop lacks ALL"),
        (lambda p, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "adds capabilities"),
        (lambda p, c: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
        (lambda p, c: p["securityContext"].update(runAsUser=0), "uid 0"),
        (lambda p, c: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p, c: c["securityContext"].pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem"),
        (lambda p, c: p.update(hostNetwork=True), "hostNetwork"),
    ],
)
def test_the_standard_check_finds_each_breach(change, found: str) -> None:
    pod = copy.deepcopy(pod_spec(yaml.safe_load(MANIFESTS[0].read_text())))
    change(pod, pod["containers"][0])
    assert any(found in v for v in restricted_violations(pod)), restricted_violations(pod)


def resolve_container(path: str, tmp_path: Path) -> tuple[dict, str, object, dict]:
    """Parse the container's args with the real CLI and resolve its spec: (doc, job, cfg, env)."""
    doc = yaml.safe_load((REPO / "jobs" / "k8s" / path).read_text())
    (container,) = pod_spec(doc)["containers"]
    assert "command" not in container  # the image's ENTRYPOINT, sononet-batch, runs the args
    assert container["image"].endswith(f"sononet-batch:{PYPROJECT['project']['version']}")
    env = {e["name"]: e.get("value", f"$({e['name']})") for e in container.get("env", [])}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]  # KeyError = undefined
    ctx = cli.make_context("sononet-batch", args)
    job, cfg = resolve_job(ctx.params["job"], list(ctx.params["overrides"]), tmp_path)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/work"} <= mounts
    return doc, job, cfg, env


def test_cronjob_trains_on_one_gpu_and_resumes(tmp_path: Path) -> None:
    doc, name, cfg, _ = resolve_container("train-all-cronjob.yaml", tmp_path)
    job = doc["spec"]["jobTemplate"]["spec"]
    assert doc["kind"] == "CronJob" and doc["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(doc["spec"]["schedule"].split()) == 5 and job["backoffLimit"] >= 1
    assert job["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert job["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert name == "train-all" and cfg.device == "cuda" and cfg.prepare.data == "/data/cremad"
    assert cfg.out == str(tmp_path / "runs" / "$(RUN_NAME)") and cfg.prepare.out == cfg.out + "/shards"


def test_indexed_job_labels_with_a_model_the_cronjob_writes(tmp_path: Path) -> None:
    from sononet.label import resolve_shard

    _, _, train, _ = resolve_container("train-all-cronjob.yaml", tmp_path)
    label = yaml.safe_load((REPO / "jobs" / "k8s" / "label-indexed-job.yaml").read_text())
    (run,) = [e["value"] for e in pod_spec(label)["containers"][0]["env"] if e["name"] == "TRAIN_RUN"]
    (Path(train.out.replace("$(RUN_NAME)", run)) / "cnn" / "model").mkdir(parents=True)  # that run, trained
    doc, name, cfg, env = resolve_container("label-indexed-job.yaml", tmp_path)
    job = doc["spec"]
    assert doc["kind"] == "Job" and job["completionMode"] == "Indexed" and job["backoffLimit"] >= 1
    assert 1 <= job["parallelism"] <= job["completions"]
    assert job["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert name == "label-folder" and cfg.input.startswith("/data/") and not cfg.merge
    # The CronJob writes runs/<its Job's name>; the labeller reads <that>/cnn/model, by default the
    # manual run the CronJob's header shows how to start.
    assert cfg.model == str(Path(train.out.replace("$(RUN_NAME)", run)) / "cnn" / "model")
    cronjob = (REPO / "jobs" / "k8s" / "train-all-cronjob.yaml").read_text()
    assert f"kubectl create job --from=cronjob/{yaml.safe_load(cronjob)['metadata']['name']} {run}" in cronjob
    assert int(env["JOB_COMPLETIONS"]) == job["completions"]
    last = str(job["completions"] - 1)
    assert resolve_shard(cfg.shard_index, cfg.shard_count, {**env, "JOB_COMPLETION_INDEX": last}) == (
        job["completions"] - 1,
        job["completions"],
    )
