"""Every `ssl-zoo ...` command in README.md and in the docs pages (docs/*.md) runs, literally, from a fresh empty
directory and from the root of a fresh copy of the repository: the documentation cannot drift from the code.

Conventions of README.md and docs/*.md this test relies on (and enforces):
- README.md is a front page (at most FRONT_PAGE_LINES lines) that links every docs page; the rest lives in docs/.
- Commands in ```bash blocks are runnable: each `ssl-zoo ...` line (`\\` continuations joined, `# comments`
  dropped, `a && b` split) is run by bash in one directory: the README's commands first, then each page's, the
  pages in the order the README links them, so a page may use what the README's main job wrote (and what the
  page's own earlier commands wrote). Only budget overrides are appended to `ssl-zoo train` (BUDGET: one epoch,
  64 images, small probes; NO_PROBES beyond digits and in the repository-root pass); the other verbs run exactly
  as written.
- ```text blocks are not run (sample output, layouts). A code block of any other kind holding an `ssl-zoo` line
  fails the test: say which it is. A bash-block command the test cannot run (a <placeholder>) fails the test.
- The repository-root pass runs one command of each kind (the first): what the working directory changes is
  how a command starts (imports, the config search path, relative paths), the same for every command of a kind;
  the kinds are the verbs, and for `train` a single run, a sweep (-m), an experiment and a streamed dataset.
- Commands with `launcher=slurm` are submitted to a real SLURM by the `slurm`-marked test (site settings appended:
  the test SLURM's partition, no GPUs). Without SLURM the sequence runs them anyway and accepts exactly one
  outcome: every config was checked and the one-line "needs sbatch" error came before anything was written.
- `ssl-zoo train` commands quoted inline in the prose (`...`) are not run; their configs are loaded and checked.
- docs/adding_a_method.md's example: code blocks whose first line is `# <path>` (methods/, conf/, tests/)
  are that file; they are written into a copy of the package and the method trains and passes its test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FRONT_PAGE_LINES = 160
DOC_LINK = r"\]\((docs/[^)#\s]+\.md)"  # a markdown link to a docs page
BUDGET = ["trainer.epochs=1", "data.train_subset=64", "trainer.batch_size=32", "monitor.num_images=32",
          "eval.max_train=256"]
# End-of-run probes read the whole test set: 450 digits images are quick, but 10k Fashion-MNIST images take most
# of a small run's time (and minutes for a ResNet). They run on digits in the fresh-directory pass; runs on larger
# datasets and the repository-root pass (same commands, only the paths differ) skip them. `ssl-zoo eval` in
# docs/evaluation.md still probes a run in both passes; tests/test_evaluation.py covers the probes themselves.
NO_PROBES = ["eval.enabled=false"]
NEEDS_SBATCH = "launcher=slurm needs sbatch and srun on PATH"
STREAMED = {"imagefolder", "imagenet", "imagenet100", "webdataset"}


# --- extraction -----------------------------------------------------------------------------------------------
def code_blocks(text: str) -> list[tuple[str, str]]:
    """[(language, body)] of every fenced block."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)]


def bash_commands(text: str, page: str = "") -> list[str]:
    """The `ssl-zoo ...` commands of the ```bash blocks of one page, in order."""
    commands = []
    for lang, body in code_blocks(text):
        lines = body.replace("\\\n", " ").splitlines()
        if lang != "bash":
            stray = [ln for ln in lines if ln.strip().startswith("ssl-zoo")]
            assert lang == "text" or not stray, f"{page} block ```{lang} holds {stray[0]!r}: make it ```bash or ```text"
            continue
        for line in lines:
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [c.strip() for c in line.split("&&") if c.strip().startswith("ssl-zoo")]
    return commands


def doc_pages() -> list[Path]:
    """docs/*.md in the order the README links them; pages it does not link come last (a test fails on them)."""
    linked = [ROOT / link for link in re.findall(DOC_LINK, README.read_text())]
    ordered = list(dict.fromkeys(p for p in linked if p.is_file()))
    return ordered + sorted(set(DOCS.glob("*.md")) - set(ordered))


def documents() -> list[Path]:
    return [README, *doc_pages()]


def all_commands() -> list[tuple[str, str]]:
    """(page, command) for every runnable command: the README's, then each docs page's, in run order."""
    pages = [(str(doc.relative_to(ROOT)), doc.read_text()) for doc in documents()]
    return [(page, command) for page, text in pages for command in bash_commands(text, page)]


def example_files(text: str) -> dict[str, str]:
    """The files of a worked example: code blocks whose first line is `# <path>` under methods/, conf/ or tests/."""
    files = {}
    for _lang, body in code_blocks(text):
        path = re.fullmatch(r"# ((?:methods|conf|tests)/\S+)", body.split("\n", 1)[0].strip())
        if path:
            files[path.group(1)] = body
    return files


def inline_train_commands(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [m.strip() for m in re.findall(r"`(ssl-zoo train[^`]*)`", prose)]


def with_budget(command: str, probes: bool = True) -> str:
    words = shlex.split(command)
    if words[1] != "train" or {"-h", "--help"} & set(words):
        return command
    large = any(w.startswith(("data=", "experiment=")) and w != "data=digits" for w in words)
    return " ".join([command, *BUDGET, *NO_PROBES * (large or not probes)])


def command_kind(command: str) -> str:
    """What the repository-root pass runs once: the verb, and for `train` the kind of run it starts."""
    words = shlex.split(command)
    if words[1] != "train":
        return words[1]
    if {"-h", "--help"} & set(words):
        return "train --help"
    if "-m" in words:
        return "train -m"
    if any(w.startswith("experiment=") for w in words):
        return "train experiment="
    if any(w.startswith("data=") and w.split("=", 1)[1] in STREAMED for w in words):
        return "train streamed"
    return "train"


def first_of_each_kind(commands: list[str]) -> list[str]:
    first: dict[str, int] = {}  # kind -> index of its first command
    for i, command in enumerate(commands):
        first.setdefault(command_kind(command), i)
    return [commands[i] for i in sorted(first.values())]


def test_extraction_follows_the_conventions():
    text = ("```bash\npip install . && ssl-zoo train   # quick\nssl-zoo train -m a=1,2 \\\n    b=3\n```\n"
            "```text\nssl-zoo status x\n```\n```bash\npython x.py\nssl-zoo compare runs/ && ssl-zoo report r\n```\n")
    assert bash_commands(text) == ["ssl-zoo train", "ssl-zoo train -m a=1,2      b=3", "ssl-zoo compare runs/",
                                   "ssl-zoo report r"]
    with pytest.raises(AssertionError, match="make it ```bash or ```text"):
        bash_commands("```\nssl-zoo train\n```\n")
    assert example_files("```python\n# methods/x.py\nA = 1\n```\n```yaml\n# a comment\nb: 2\n```\n") == {
        "methods/x.py": "# methods/x.py\nA = 1\n"}
    assert with_budget("ssl-zoo train x=1").endswith(" ".join(BUDGET))
    assert with_budget("ssl-zoo compare runs/") == "ssl-zoo compare runs/"
    assert first_of_each_kind(["ssl-zoo train", "ssl-zoo train seed=1", "ssl-zoo train -m seed=0,1",
                               "ssl-zoo train experiment=x", "ssl-zoo train -m experiment=x seed=0,1",
                               "ssl-zoo train data=imagenet100", "ssl-zoo train data=webdataset",
                               "ssl-zoo eval a", "ssl-zoo eval b", "ssl-zoo train --help"]) == [
        "ssl-zoo train", "ssl-zoo train -m seed=0,1", "ssl-zoo train experiment=x", "ssl-zoo train data=imagenet100",
        "ssl-zoo eval a", "ssl-zoo train --help"]


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    lines = len(README.read_text().splitlines())
    assert lines <= FRONT_PAGE_LINES, f"README.md has {lines} lines: move details to a docs page"
    linked = {ROOT / link for link in re.findall(DOC_LINK, README.read_text())}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p not in linked]
    assert not unlinked, f"README.md does not link these docs pages: {unlinked}"


def test_relative_links_point_at_files():
    broken = []
    for doc in documents():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_docs_have_commands_and_none_is_a_placeholder():
    commands = all_commands()
    assert len(commands) >= 10, commands
    placeholders = [f"{page}: {c}" for page, c in commands if re.search(r"<[^>]*>", c)]
    assert not placeholders, f"commands the test cannot run (placeholders): {placeholders}"


def test_the_docs_name_every_shipped_ablation():
    """The ablations named in the README and the docs (the README's methods table) cannot fall behind
    conf/ablation/."""
    text = "\n".join(doc.read_text() for doc in documents())
    missing = [p.stem for p in sorted((ROOT / "conf" / "ablation").glob("*.yaml")) if p.stem not in text]
    assert not missing, f"README.md and docs/ do not name these ablations: {missing}"


def test_inline_train_commands_are_valid_configs():
    from ssl_zoo.config.overrides import expand_sweep
    from ssl_zoo.launch import launcher as launch

    inline = [c for doc in documents() for c in inline_train_commands(doc.read_text())]
    assert inline
    for command in inline:
        words = shlex.split(command)[2:]
        for job in expand_sweep([w for w in words if w != "-m"]) if "-m" in words else [words]:
            launch.load(job)  # a study's own config; its grid is run by the test below


# --- running them ---------------------------------------------------------------------------------------------
def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # the suite shares two cores: no spin-waiting thread pools
    env.pop("PYTHONPATH", None)  # what a user has: the installed package
    return env


def _run(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _repository_copy(dest: Path) -> Path:
    """A fresh checkout: the repository's tracked files (what a clone has), nothing built or run."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def run_docs(cwd: Path, slurm: bool, probes: bool = True, each_kind_once: bool = False) -> list[str]:
    """Runs every command of the README and the docs pages (or the first of each kind) in order in cwd; returns a
    timing line per command."""
    timings = []
    commands = all_commands()
    if each_kind_once:
        firsts = first_of_each_kind([c for _page, c in commands])
        commands = [next(pc for pc in commands if pc[1] == c) for c in firsts]
    for page, command in commands:
        is_slurm = "launcher=slurm" in command.split()
        if is_slurm and slurm:
            continue  # test_docs_slurm_commands submits it to the test SLURM
        start = time.time()
        out = _run(with_budget(command, probes), cwd)
        what = f"{page} command `{command}` in {cwd}"
        if is_slurm:
            assert out.returncode == 2 and NEEDS_SBATCH in out.stderr, f"{what}: {out.stderr[-2000:]}"
            assert len(out.stderr.strip().splitlines()) == 1, f"{what}: {out.stderr}"
        else:
            assert out.returncode == 0, f"{what} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
            assert "Traceback" not in out.stderr, f"{what}:\n{out.stderr[-3000:]}"
        timings.append(f"{time.time() - start:6.1f} s  {page}: {command}")
        print(timings[-1], flush=True)  # visible with -s while the sequence runs
    return timings


def _has_slurm() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-t", "idle,mixed", "-o", "%n"], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


@pytest.mark.slow
def test_doc_commands_run_from_a_fresh_directory(tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_docs(fresh, _has_slurm())
    # what the commands promise to leave behind, relative to the directory they ran in
    assert list((fresh / "runs").glob("byol-none-digits-small_cnn-s0-*/results.json"))
    assert (fresh / "runs" / "compare_methods" / "comparison.md").is_file()
    assert list((fresh / "runs").glob("byol-none-digits-small_cnn-s0-*/export/backbone.safetensors"))
    assert (fresh / "runs" / "collapse_study" / "report" / "report.html").is_file()
    assert not (fresh / "runs" / "grid").exists()  # the SLURM command without SLURM wrote nothing


@pytest.mark.slow
def test_doc_commands_run_from_the_repository_root(tmp_path):
    repo = _repository_copy(tmp_path / "repo")
    run_docs(repo, _has_slurm(), probes=False, each_kind_once=True)
    assert (repo / "runs" / "collapse_study" / "report" / "report.html").is_file()


@pytest.mark.slurm
@pytest.mark.skipif(not _has_slurm(), reason="no SLURM answers (bash scripts/start_slurm.sh)")
def test_doc_slurm_commands_run_on_slurm_from_the_repository_root(tmp_path):
    """Submitted from the root of a repository copy (its ./ssl_zoo shadows the installed package in the tasks),
    with the README's relative out_dir; every task must finish."""
    from ssl_zoo.commands.status import task_states

    repo = _repository_copy(tmp_path / "repo")
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0]
    site = [f"launcher.partition={partition.rstrip('*')}", "launcher.gpus_per_node=0", "launcher.cpus_per_task=1",
            "launcher.timeout_min=10"]
    commands = [c for _page, c in all_commands() if "launcher=slurm" in c.split()]
    assert commands
    jobs = []
    try:
        for command in commands:
            out = _run(f"{with_budget(command)} {' '.join(site)}", repo)
            assert out.returncode == 0, f"`{command}`: {out.stderr[-2000:]}"
            jobs += re.findall(r"submitted SLURM job (\d+)", out.stdout)
            sweep = Path(re.search(r"sweep directory: (\S+)", out.stdout).group(1))
            assert sweep.is_relative_to(repo)
            deadline = time.time() + 600
            while time.time() < deadline:
                tasks = task_states(sweep)
                if tasks and all(t["state"] in ("finished", "diverged", "failed", "stopped") for t in tasks):
                    break
                time.sleep(2)
            assert tasks and all(t["state"] == "finished" for t in tasks), tasks
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True)


@pytest.mark.slow
def test_the_readme_example_method_trains_and_passes_its_test(tmp_path):
    """The files of docs/adding_a_method.md, written into a checkout whose package imports them as they are (what
    `pip install -e .` gives): the method trains from a fresh directory and its test passes."""
    files = example_files((DOCS / "adding_a_method.md").read_text())
    method = next(Path(f).stem for f in files if f.startswith("methods/"))
    test = next(f for f in files if f.startswith("tests/"))
    assert f"conf/method/{method}.yaml" in files, sorted(files)
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("ssl_zoo", "methods", "analysis", "conf"):
        shutil.copytree(ROOT / folder, checkout / folder, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", checkout)
    for name, body in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(body)
    env = {**_env(), "PYTHONPATH": str(checkout)}  # ahead of the installed package
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for command, cwd in ((with_budget(f"ssl-zoo train method={method}", probes=False), fresh),
                         (f"python -m pytest -q -p no:cacheprovider {test}", checkout)):
        out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"`{command}`:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert list((fresh / "runs").glob(f"{method}-none-digits-small_cnn-s0-*/checkpoints/last.pt"))
