"""The Dockerfile, checked without a Docker daemon (none is needed, and no network).

The image itself is built elsewhere; these tests catch the drift a build would not show until a
pod fails on a cluster: a pip install without the pins, a missing runtime extra, a root user, a
command in the Helm chart that the image does not have, a console script that does not import,
a build context that ships .venv or .git.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CHART = REPO / "helm" / "trainyard"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

# what the chart's containers need from the image beyond Trainyard's own dependencies
RUNTIME_PACKAGES = {"torch", "ray", "deepspeed", "mlflow", "s3fs", "psycopg", "boto3"}
RAY_EXTRAS = {"default", "train", "tune", "serve"}   # default: the dashboard and its agent
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# What KubeRay itself runs in a Ray container whose spec sets no command (the chart sets none):
# `bash -c 'ulimit -n ...; ray start ...'` (or `bash -lc`), the `wait-gcs-ready` init container's
# bash loop of `ray health-check` and `sleep`, the autoscaler sidecar's `ray kuberay-autoscaling`
# (it takes the head's image), and the exec probes
# `bash -c 'wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success ...'`.
KUBERAY_RUNS = ("bash", "ray", "grep", "sleep", "wget")

# in every Debian-based python:*-slim image (Debian's essential packages and the interpreter)
BASE_IMAGE_TOOLS = {"sh", "bash", "grep", "sed", "sleep", "cat", "env", "test", "[", "true",
                    "false", "ls", "mkdir", "rm", "cp", "mv", "chmod", "id", "python", "python3"}
SHELL_BUILTINS = {"echo", "exec", "exit", "export", "cd", "set", "ulimit", "command", "printf",
                  "read", "trap", "wait", "source", ".", ":", "unset", "shift", "return"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}",
                  "!", "time", "for", "case", "esac", "in", "select", "function"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "\n"}


# ---------------------------------------------------------------- reading the Dockerfile


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction: continuation lines joined, comment lines dropped."""
    text = DOCKERFILE.read_text() if text is None else text
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue   # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages() -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """The instructions before the first FROM (global ARGs), and one list per stage (FROM first)."""
    head: list[tuple[str, str]] = []
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            found.append([])
        (found[-1] if found else head).append((keyword, rest))
    return head, found


def final_stage() -> list[tuple[str, str]]:
    return stages()[1][-1]


def args_of(instructions) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, eq, default = rest.partition("=")
            out[name.strip()] = default.strip().strip('"') if eq else None
    return out


def env_of(instructions) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            words = shlex.split(rest)
            if len(words) == 2 and "=" not in words[0]:   # the legacy `ENV KEY value` form
                out[words[0]] = words[1]
                continue
            for word in words:
                key, _, value = word.partition("=")
                out[key] = value
    return out


def run_scripts(instructions) -> list[str]:
    """The shell text of each RUN, its --mount/--network flags left out."""
    scripts = []
    for keyword, rest in instructions:
        if keyword == "RUN":
            while rest.startswith("--"):
                rest = rest.split(None, 1)[1]
            scripts.append(rest)
    return scripts


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script (words), split at ;, &&, ||, | and newlines.

    Enough for the scripts at hand (no heredocs, no nested quoting tricks): leading keywords
    (do, then, {, !) and variable assignments are dropped, `for`/`case` headers skipped.
    """
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = []
    current: list[str] = []
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for words in commands:
        while words and (words[0] in SHELL_KEYWORDS - {"for", "case", "select", "function"}
                         or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0])):
            words = words[1:]
        if words and words[0] not in {"for", "case", "select", "function", "in", "esac"}:
            out.append(words)
    return out


def pip_installs(instructions) -> list[list[str]]:
    """The words after `pip install` of each pip install in these instructions."""
    found = []
    for script in run_scripts(instructions):
        for words in shell_commands(script):
            if words[:2] in (["pip", "install"], ["pip3", "install"]):
                found.append(words[2:])
            elif words[:4] in (["python", "-m", "pip", "install"], ["python3", "-m", "pip", "install"]):
                found.append(words[4:])
    return found


PIP_OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url",
                          "--extra-index-url", "-f", "--find-links", "-t", "--target",
                          "--prefix", "--root", "--report", "--platform", "--python-version",
                          "--only-binary", "--no-binary", "--progress-bar"}


def pip_parts(words: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(options with their values, requirement arguments) of one pip install."""
    options: dict[str, list[str]] = {}
    reqs: list[str] = []
    it = iter(words)
    for word in it:
        if word.startswith("-"):
            name, eq, value = word.partition("=")
            if name in PIP_OPTIONS_WITH_VALUE:
                options.setdefault(name, []).append(value if eq else next(it))
            else:
                options.setdefault(name, []).append("")
        else:
            reqs.append(word)
    return options, reqs


PROJECT_WHEEL = re.compile(r"trainyard-[^/\s]*\.whl\)?(\[(?P<extras>[^\]]*)\])?$")


def installed_requirements() -> tuple[dict[str, set[str]], set[str]]:
    """What the image's pip installs ask for, by name with their extras, and the project's extras.

    The project (its wheel, or the source folder `.`) counts as its pyproject dependencies.
    """
    wanted: dict[str, set[str]] = {}
    project_extras: set[str] | None = None
    for words in pip_installs(final_stage()):
        for arg in pip_parts(words)[1]:
            match = PROJECT_WHEEL.search(arg) or re.fullmatch(r"\.(\[(?P<extras>[^\]]*)\])?", arg)
            if match:
                project_extras = {e.strip() for e in (match.group("extras") or "").split(",") if e.strip()}
                continue
            req = Requirement(arg)
            wanted.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    assert project_extras is not None, "no pip install of Trainyard itself in the final stage"
    optional = PYPROJECT["project"].get("optional-dependencies", {})
    for spec in PYPROJECT["project"]["dependencies"] + [r for e in project_extras for r in optional[e]]:
        req = Requirement(spec)
        wanted.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return wanted, project_extras


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    return pins


# ---------------------------------------------------------------- the Dockerfile itself


def test_base_is_the_official_python_311_slim_image():
    head, found = stages()
    base = found[-1][0][1].split()[0]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args_of(head).get(m.group(1)) or "", base)
    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains("3.11")


def test_every_pip_install_resolves_under_constraints_txt():
    final = final_stage()
    destinations = set()
    for keyword, rest in final:
        words = rest.split()
        if keyword == "COPY" and "constraints.txt" in words[:-1] and not rest.startswith("--from"):
            dest = words[-1]
            destinations.add(dest + "constraints.txt" if dest.endswith("/") else dest)
    assert destinations, "constraints.txt is not copied into the image"
    installs = pip_installs(final)
    assert installs, "no pip install in the final stage"
    for words in installs:
        options, _ = pip_parts(words)
        constraints = options.get("-c", []) + options.get("--constraint", [])
        assert constraints, f"pip install {' '.join(words)}: no -c constraints.txt"
        assert set(constraints) <= destinations, \
            f"pip install -c {constraints}: not the copied constraints.txt {sorted(destinations)}"


def test_torch_comes_from_the_build_arg_index_at_the_pinned_version():
    pins = constraint_pins()
    assert "torch" in pins, "constraints.txt must pin torch (==)"
    head, found = stages()
    assert args_of(head).get("TORCH_INDEX_URL") == TORCH_CPU_INDEX, "the default image is the CPU one"
    assert "TORCH_INDEX_URL" in args_of(found[-1]), "declare ARG TORCH_INDEX_URL in the final stage too"
    torch_installs = [w for w in pip_installs(found[-1])
                      if any(canonicalize_name(Requirement(r).name) == "torch" for r in pip_parts(w)[1]
                             if not PROJECT_WHEEL.search(r) and r != ".")]
    assert len(torch_installs) == 1, torch_installs
    options, reqs = pip_parts(torch_installs[0])
    assert options.get("--index-url") == ["${TORCH_INDEX_URL}"], options
    for r in reqs:
        spec = Requirement(r).specifier
        assert not spec or spec.contains(pins["torch"]), f"{r} disagrees with constraints.txt's torch=={pins['torch']}"


def test_the_image_installs_what_the_chart_runs_and_no_dev_tools():
    wanted, project_extras = installed_requirements()
    missing = RUNTIME_PACKAGES - set(wanted)
    assert not missing, f"the image installs no {sorted(missing)}"
    assert RAY_EXTRAS <= wanted["ray"], f"ray extras: {sorted(wanted['ray'])}, need {sorted(RAY_EXTRAS)}"
    assert "binary" in wanted["psycopg"], "psycopg[binary]: the slim image has no libpq"
    assert "postgres" in project_extras
    assert "dev" not in project_extras
    assert not {"pytest", "moto"} & set(wanted), "test tools stay out of the image"
    pins = constraint_pins()
    assert not {n for n in wanted if n not in pins} - {"trainyard"}, \
        f"installed but not pinned in constraints.txt: {sorted(n for n in wanted if n not in pins)}"


def test_every_variable_a_stage_uses_is_declared_in_it():
    # a global ARG is empty inside a stage unless that stage declares it again
    head, found = stages()
    for stage in found:
        known = set(args_of(stage)) | set(env_of(stage))
        for script in run_scripts(stage):
            for name in re.findall(r"\$\{(\w+)\}", script):
                assert name in known, f"${{{name}}} in `{script[:60]}...` is not declared in its stage"


def test_the_build_context_holds_every_package_the_wheel_needs():
    from setuptools import find_packages

    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    roots = set()
    for where in find["where"]:
        for pkg in find_packages(where=str(REPO / where), include=find["include"]):
            roots.add((Path(where) / pkg.split(".")[0]).as_posix().removeprefix("./"))
    build = stages()[1][0]
    sources = [s.rstrip("/") for keyword, rest in build if keyword == "COPY"
               for s in rest.split()[:-1] if not s.startswith("--")]
    assert PYPROJECT["project"]["readme"] in sources and "pyproject.toml" in sources
    for root in sorted(roots):
        assert any(root == s or root.startswith(s + "/") for s in sources), f"{root}/ is not copied"


def image_user() -> str:
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    return users[-1]


def test_runs_as_a_non_root_user():
    uid, _, gid = image_user().partition(":")
    assert uid.isdigit() and int(uid) != 0, \
        f"USER {image_user()}: numeric and non-root, so that runAsNonRoot can check it"
    assert any(f"--uid {uid}" in s for s in run_scripts(final_stage())), f"no user is created with uid {uid}"
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in final_stage()), \
        "no ENTRYPOINT: the chart's and KubeRay's commands must run as given"


def test_the_chart_runs_the_image_as_its_user():
    uid = int(image_user().partition(":")[0])
    chart_uids = {(pod.get("securityContext") or {}).get("runAsUser")
                  for _, pod, _, in_image in trainyard_containers() if in_image} - {None}
    assert chart_uids, "no pod of the Trainyard image sets runAsUser: nothing to compare"
    assert chart_uids == {uid}, f"the chart runs the image as {chart_uids}, the image's user is {uid}"


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE", re.I)


def test_no_secrets_and_no_pip_cache_in_the_image():
    head, found = stages()
    for stage in found:
        env = env_of(stage)
        assert env.get("PIP_NO_CACHE_DIR") in {"1", "true", "yes", "on"}, "set PIP_NO_CACHE_DIR=1 in every stage"
        for name in list(env) + list(args_of(stage)):
            assert not SECRET_NAME.search(name), f"{name}: secrets come from the chart's Secrets, not the image"
        for keyword, rest in stage:
            if keyword in {"COPY", "ADD"}:
                assert not re.search(r"(^|/|\s)(\.env|.*token.*|.*\.pem|.*\.key|\.aws|\.ray)(\s|$)", rest), rest
    for name in args_of(head):
        assert not SECRET_NAME.search(name), name


# ---------------------------------------------------------------- .dockerignore


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().lstrip("/").removeprefix("./").rstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerignore_matcher_follows_docker_rules():
    assert dockerignore_excludes("a/b/c.py", ["a"])
    assert not dockerignore_excludes("a/b/c.py", ["*", "!a"])
    assert dockerignore_excludes("a/__pycache__/x.pyc", ["*", "!a", "**/__pycache__"])
    assert dockerignore_excludes("x.pyc", ["**/*.pyc"])
    assert not dockerignore_excludes("b/c.py", ["a/*"])


def test_dockerignore_keeps_the_context_to_what_the_build_copies():
    patterns = dockerignore_patterns()
    kept = ["pyproject.toml", "README.md", "constraints.txt"]
    for root in ("platform", "workloads"):
        kept += [p.relative_to(REPO).as_posix() for p in (REPO / root).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
    dropped = [p for p in kept if dockerignore_excludes(p, patterns)]
    assert not dropped, f".dockerignore drops files the build needs: {dropped[:5]}"
    for keyword, rest in [i for stage in stages()[1] for i in stage]:
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert not dockerignore_excludes(source.rstrip("/"), patterns), f"COPY {source}: ignored"
    junk = [".venv/bin/python", ".git/HEAD", ".gpu-kit/run.sh", "tests/unit/test_helm.py",
            "tests/conftest.py", "benchmarks/bench_serve.py", "mlruns/0/meta.yaml", "mlflow.db",
            ".pytest_cache/v/cache/nodeids", "platform/trainyard/__pycache__/specs.cpython-311.pyc",
            "workloads/cnn/__pycache__/model.cpython-311.pyc", "trainyard.egg-info/PKG-INFO",
            ".trainyard-demo/server.log", ".ci/run", "examples/cnn.yaml", "dist/x.whl", "build/lib/x.py",
            ".env", "admin.token"]
    leaked = [p for p in junk if not dockerignore_excludes(p, patterns)]
    assert not leaked, f".dockerignore lets these into the build context: {leaked}"


# ---------------------------------------------------------------- the chart's commands


def trainyard_containers() -> list[tuple[str, dict, dict, bool]]:
    """(kind, pod spec, container, runs the Trainyard image) for every container of every
    value set that tests/unit/test_helm.py renders."""
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    return _rendered_containers()


@functools.cache
def _rendered_containers() -> list[tuple[str, dict, dict, bool]]:
    from test_helm import VALUE_SETS, render

    found = []

    repository = VALUES["image"]["repository"]
    for values in VALUE_SETS.values():
        for doc in render(values):
            spec = doc.get("spec") or {}
            pods = []
            if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
                pods.append(spec["template"]["spec"])
            elif doc["kind"] == "CronJob":
                pods.append(spec["jobTemplate"]["spec"]["template"]["spec"])
            elif doc["kind"] == "Pod":
                pods.append(spec)
            elif doc["kind"] == "RayCluster":
                pods.append(spec["headGroupSpec"]["template"]["spec"])
                pods += [w["template"]["spec"] for w in spec.get("workerGroupSpecs") or []]
            for pod in pods:
                for container in pod.get("initContainers", []) + pod.get("containers", []):
                    in_image = container["image"].rsplit(":", 1)[0] == repository
                    found.append((doc["kind"], pod, container, in_image))
    return found


def executables(argv: list[str]) -> list[list[str]]:
    """The commands an argv runs: itself, or each command of a `sh -c`/`bash -c` script."""
    if not argv:
        return []
    if argv[0] in {"sh", "bash", "/bin/sh", "/bin/bash"}:
        flags = [a for a in argv[1:] if a.startswith("-") and a != "--"]
        if any("c" in f for f in flags):
            script = next(a for a in argv[1:] if not a.startswith("-"))
            return [[argv[0]]] + shell_commands(script)
    return [argv]


def image_executables() -> dict[str, str]:
    """Executable name -> where the image gets it."""
    have = {name: "the base image" for name in BASE_IMAGE_TOOLS | SHELL_BUILTINS}
    for script in run_scripts(final_stage()):
        for words in shell_commands(script):
            if words[:2] == ["apt-get", "install"]:
                have.update({w: "apt-get install" for w in words[2:] if not w.startswith("-")})
    for name in PYPROJECT["project"].get("scripts", {}):
        have[name] = "pyproject.toml [project.scripts]"
    wanted, _ = installed_requirements()
    for ep in importlib.metadata.entry_points(group="console_scripts"):
        if canonicalize_name(ep.dist.name) in wanted:
            have.setdefault(ep.name, f"the {ep.dist.name} distribution")
    return have


def test_console_scripts_of_ray_and_mlflow_come_with_the_image():
    have = image_executables()
    for name in ("ray", "mlflow", "trainyard", "python", "wget", "bash"):
        assert name in have, f"{name} is not in the image"


def test_every_command_the_chart_runs_in_the_image_exists_there():
    have = image_executables()
    cmd = next((rest for keyword, rest in final_stage() if keyword == "CMD"), None)
    image_cmd = yaml.safe_load(cmd) if cmd else []
    seen_components = set()
    problems = []
    for kind, pod, container, in_image in trainyard_containers():
        if not in_image:
            continue
        seen_components.add(container["name"])
        argvs = []
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if argv:
            argvs.append(argv)
        elif kind == "RayCluster":
            argvs += [[name] for name in KUBERAY_RUNS]
        else:
            argvs.append(image_cmd)
        for key in ("readinessProbe", "livenessProbe", "startupProbe"):
            argvs.append(((container.get(key) or {}).get("exec") or {}).get("command") or [])
        for hook in ((container.get("lifecycle") or {}).values()):
            argvs.append((hook.get("exec") or {}).get("command") or [])
        for words in (w for a in argvs for w in executables(a)):
            name = words[0]
            if "$(" in name or "${" in name:
                problems.append(f"{container['name']}: `{name}` is expanded at run time; name the executable")
            elif name not in have:
                problems.append(f"{container['name']}: runs `{name}`, which the image does not have")
            elif name in {"python", "python3"} and words[1:2] == ["-m"]:
                module = words[2]
                spec = importlib.util.find_spec(module)
                if spec is None:
                    problems.append(f"{container['name']}: python -m {module}: no such module")
                elif spec.submodule_search_locations is not None and importlib.util.find_spec(module + ".__main__") is None:
                    problems.append(f"{container['name']}: python -m {module}: a package without __main__")
    assert not problems, "\n".join(sorted(set(problems)))
    # the check has teeth only if it saw them all
    assert {"server", "mlflow", "ray-head", "ray-worker"} <= seen_components, seen_components


def test_a_chart_command_missing_from_the_image_is_caught():
    have = image_executables()
    missing = [w[0] for w in executables(["sh", "-c", "curl -s http://localhost/ | jq .ok && ray status; wget -q -O- x | grep ok"])
               if w[0] not in have]
    assert missing == ["curl", "jq"]


def test_ray_version_of_the_chart_is_the_pinned_one():
    assert str(VALUES["ray"]["version"]) == constraint_pins()["ray"]


# ---------------------------------------------------------------- console scripts


@pytest.mark.parametrize("name", sorted(PYPROJECT["project"].get("scripts", {})))
def test_each_console_script_points_at_an_importable_function(name):
    target = PYPROJECT["project"]["scripts"][name]
    module_name, _, attr = target.partition(":")
    assert attr, f"{name} = {target!r}: want module:function"
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert callable(obj), f"{name} -> {target} is not callable"
