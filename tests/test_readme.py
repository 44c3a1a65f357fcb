"""Walk README.md: run every command of its code blocks, in order, as a new user would, scaled down.

Run it alone with ``pytest -m readme``. It adapts to README edits:

* The commands are parsed, not listed here: every line of a code block (indented by 4 spaces or
  fenced) that starts with ``hwnas COMMAND``, ``$ hwnas COMMAND`` or ``torchrun`` (COMMAND being a
  real sub-command, so shown output such as ``hwnas main job: ...`` is not taken), with ``\\``
  continuations joined and ``# comments`` dropped. Identical commands run once.
* They run in README order in a scratch copy of the repository (``git clone`` + ``cd`` as the
  README's set-up says), with ``../shared`` beside it pointing at the shared data folder when there
  is one, so outputs of one command (runs/s1/arch.json ...) feed the next ones. ``hwnas`` commands
  run in this process through ``hwnas.cli.main`` (what the ``hwnas`` script calls; it saves a
  Python + PyTorch start per command), ``torchrun`` in a subprocess.
* ``SCALE`` shrinks what is slow: every rule whose pattern matches a command appends its
  arguments (argparse keeps the last value of an option, so ``--epochs 1`` overrides the README's
  ``--epochs 8``). A new slow command in the README needs one more rule, nothing else; the test
  prints each command's time so a slow one is easy to spot.
* ``SKIP`` lists commands that are not run, each with its reason.
* ``FILES`` are written into the copy before the walk (inputs the README only mentions).
* A ``$ hwnas ...`` line followed by a shown ``hwnas: error: ...`` line must fail with exit code 2
  and print exactly that line; every other command must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", ROOT.parent / "shared"))  # the shared data beside the clone

# Small settings shared by the gradient-search rules (the supernet trains for a few steps only).
_TINY_SEARCH = ["--epochs", "2", "--warmup-epochs", "1", "--max-steps", "2", "--batch-size", "16",
                "--limit-train", "64", "--limit-val", "32", "--threads", "1", "--no-progress"]
_TINY_CELLS = ["--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--set", "layers=3", "--set", "channels=4",
               "--set", "resolution=8", "--limit-train", "32", "--limit-val", "16"]
_TINY_TRAIN = ["--epochs", "1", "--max-steps", "2", "--limit-train", "64", "--limit-val", "32", "--no-progress"]
_TINY_RUN = ["--set", "latency.predictor=predictors/amd-epyc-2c-tflite-fp32.json", "--set", "search.epochs=2",
             "--set", "search.warmup_epochs=1", "--set", "search.child_warmup_epochs=0",
             "--set", "search.relevel=1",
             "--set", "search.max_steps=2", "--set", "search.batch_size=16",
             "--set", "train.epochs=1", "--set", "train.max_steps=2", "--set", "data.limit_train=64",
             "--set", "data.limit_val=32", "--set", "data.workers=0", "--set", 'export.quant=["fp32"]',
             "--set", "export.check_images=8", "--set", "export.calib_images=8", "--no-progress"]

# (pattern searched in the README command, arguments appended). Every matching rule applies.
SCALE: list[tuple[str, list[str]]] = [
    (r"^hwnas profile ", ["--limit", "1", "--repeats", "2", "--no-progress"]),
    (r"^hwnas profile .*--models", ["--models", "1", "--rounds", "1", "--cache", "rounds-cache"]),
    (r"^hwnas measure --archs", ["--archs", "1", "--repeats", "2", "--no-progress"]),
    (r"^hwnas measure runs/", ["--repeats", "2"]),
    # this CPU's table holds only the scaled-down rows above: fit the committed reference table instead
    (r"^hwnas fit ", ["--device", "amd-epyc-2c", "--out", "fitted", "--methods", "per-kind-loglinear",
                      "--no-progress"]),
    (r"hwnas search (?!.*--space darts-cell)(?!.*--strategy)", _TINY_SEARCH),
    (r"hwnas search .*--relevel", ["--relevel", "2"]),  # two children timed, not six
    (r"hwnas search .*--strategy", ["--evaluations", "2", "--proxy-steps", "2", "--batch-size", "16",
                                    "--limit-train", "64", "--limit-val", "32", "--threads", "1", "--no-progress"]),
    (r"hwnas search .*--space fbnet-cifar100", ["--epochs", "1", "--warmup-epochs", "0", "--max-steps", "1",
                                                "--batch-size", "8", "--limit-train", "16", "--limit-val", "8"]),
    (r"hwnas search --space darts-cell", _TINY_CELLS + ["--no-progress"]),
    (r"^hwnas train ", _TINY_TRAIN),
    (r"^hwnas export ", ["--check-images", "16", "--calib-images", "16"]),
    (r"^hwnas export (?!.*--quant)", ["--quant", "fp32"]),
    (r"^hwnas run", _TINY_RUN),
    (r"^hwnas tune ", ["--trials", "2", "--epochs", "1", "--max-steps", "2", "--limit-train", "64",
                       "--limit-val", "32", "--no-progress"]),
    (r"^hwnas phones fit ", ["--test-from", "300", "--no-progress"]),  # on the first 400 rows, see PREPARE
    (r"^hwnas fit --adapt", ["--models", "5", "--rounds", "1"]),
]

# (pattern, reason): commands not run.
SKIP: list[tuple[str, str]] = []
if not SHARED.is_dir():
    SKIP.append((r"\.\./shared|configs/cifar10\.toml", f"needs the shared data folder ({SHARED} is absent)"))

# Files the README mentions without creating them.
FILES = {"bad.json": '{"space": "proxyless-tiny", "choices": ["k3_e3"]}\n'}


def _first_rows(path: str, n: int):
    """A preparation step: keep the header and the first ``n`` rows of a CSV in the copy."""
    def prepare(repo: Path) -> None:
        lines = (repo / path).read_text().splitlines(keepends=True)
        (repo / path).write_text("".join(lines[: n + 1]))
    return prepare


def _phone_samples(n: int):
    """A preparation step: ``samples.csv`` in the copy, ``n`` architectures of the shared phone CSV with one
    device's column (Pixel 3's, as a stand-in for a phone of one's own)."""
    def prepare(repo: Path) -> None:
        import csv

        rows = list(csv.DictReader(open(SHARED / "phones" / "fbnet_cifar100_latency.csv")))[:n]
        text = "arch_id,ops,my_phone_ms\n" + "".join(f"{r['arch_id']},{r['ops']},{r['pixel3_ms']}\n" for r in rows)
        (repo / "samples.csv").write_text(text)
    return prepare


# (pattern, step run in the copy just before the matching command)
PREPARE = [(r"^hwnas phones fit latency_data/phones/samsung_a50-models\.csv",
            _first_rows("latency_data/phones/samsung_a50-models.csv", 400)),
           (r"^hwnas phones adapt samples\.csv", _phone_samples(10))]


@dataclass
class Command:
    text: str  # as in the README, continuation lines joined
    line: int  # README line number
    error: str | None = None  # the shown error line, when the README shows the command failing


def _known_commands() -> set[str]:
    from hwnas.cli import COMMAND_MODULES

    return set(COMMAND_MODULES)


def readme_commands(text: str) -> list[Command]:
    """The commands of the code blocks of a README text, in order (see the module docstring)."""
    known = _known_commands()
    commands: list[Command] = []
    fenced = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        in_block = fenced or raw.startswith("    ")
        stripped = raw.strip()
        shown = stripped.startswith("$ ")
        body = stripped[2:] if shown else stripped
        words = body.split()
        is_command = in_block and len(words) > 1 and (
            (words[0] == "hwnas" and words[1] in known) or words[0] == "torchrun")
        if not is_command:
            i += 1
            continue
        start = i
        while body.endswith("\\") and i + 1 < len(lines):
            i += 1
            body = body[:-1].rstrip() + " " + lines[i].strip()
        cmd = Command(" ".join(shlex.split(body, comments=True)), start + 1)
        if shown and i + 1 < len(lines) and lines[i + 1].strip().startswith("hwnas: error:"):
            cmd.error = lines[i + 1].strip()
        commands.append(cmd)
        i += 1
    unique: dict[str, Command] = {}
    for cmd in commands:
        unique.setdefault(cmd.text, cmd)
    return list(unique.values())


def scaled_argv(cmd: Command) -> list[str]:
    """The argument list to run: the README command plus every matching SCALE rule's arguments."""
    words = shlex.split(cmd.text)
    extra = [arg for pattern, args in SCALE if re.search(pattern, cmd.text) for arg in args]
    if words[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *words[1:], *extra]
    return [sys.executable, "-m", "hwnas", *words[1:], *extra]


def run_command(argv: list[str], cwd: Path, env: dict) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one scaled command: ``python -m hwnas ...`` in this process
    (through ``hwnas.cli.main``, in ``cwd``), anything else as a subprocess."""
    if argv[1:3] != ["-m", "hwnas"]:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
    import contextlib
    import io
    import traceback

    from hwnas.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv[3:])
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - a traceback is a failure of the walk, shown in full
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def test_parser_takes_commands_continuations_and_shown_errors():
    text = """
Prose mentioning hwnas search in a sentence.

    $ hwnas space list
    proxyless-tiny     proxyless  32px  9 positions
    hwnas main job: proxyless-tiny on digits
    hwnas search --fast \\
        --out runs/x          # a comment
    $ hwnas arch show bad.json
    hwnas: error: bad.json: no such file
```
torchrun --standalone -m hwnas search --fast
hwnas space list
```
"""
    cmds = readme_commands(text)
    assert [c.text for c in cmds] == ["hwnas space list", "hwnas search --fast --out runs/x",
                                      "hwnas arch show bad.json", "torchrun --standalone -m hwnas search --fast"]
    assert cmds[2].error == "hwnas: error: bad.json: no such file" and cmds[0].error is None
    assert scaled_argv(cmds[1])[-len(_TINY_SEARCH):] == _TINY_SEARCH


def test_run_command_reports_exit_codes_and_output(tmp_path):
    code, out, _ = run_command(scaled_argv(Command("hwnas space list", 1)), tmp_path, dict(os.environ))
    assert code == 0 and "darts-cell" in out
    code, _, err = run_command(scaled_argv(Command("hwnas arch show nope.json", 1)), tmp_path, dict(os.environ))
    assert code == 2 and err.startswith("hwnas: error: nope.json")
    code, _, err = run_command(scaled_argv(Command("hwnas arch show a.json --bogus", 1)), tmp_path, dict(os.environ))
    assert code == 2 and "unrecognized arguments" in err


def test_readme_has_the_commands_the_walk_relies_on():
    texts = [c.text for c in readme_commands((ROOT / "README.md").read_text())]
    assert len(texts) >= 25
    assert any(t.startswith("hwnas search") for t in texts) and any(t.startswith("torchrun") for t in texts)
    dead = [p for p, _ in SCALE + PREPARE if not any(re.search(p, t) for t in texts)]
    assert dead == [], "these rules match no README command any more: remove or update them"


@pytest.mark.readme
def test_every_readme_command_runs(tmp_path, monkeypatch):
    repo = tmp_path / "clone"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "archs", "__pycache__",
                                                               ".pytest_cache", "*.egg-info"))
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED.resolve())
    for name, content in FILES.items():
        (repo / name).write_text(content)
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("PYTHONPATH", str(repo))  # the conversion worker subprocess imports the copy too
    failures, timings, skipped = [], [], []
    threads = torch.get_num_threads()  # commands set it (--threads 1); later tests get it back
    try:
        _walk(repo, env, failures, timings, skipped)
    finally:
        torch.set_num_threads(threads)
    print("\nREADME walk, seconds per command:")
    for seconds, line, text in timings:
        print(f"  {seconds:6.1f}  line {line}: {text[:100]}")
    print(f"  {sum(t for t, *_ in timings):6.1f}  total ({len(timings)} commands)")
    for line in skipped:
        print(f"  skipped {line}")
    assert not failures, "\n\n".join(failures)


def _walk(repo: Path, env: dict, failures: list, timings: list, skipped: list) -> None:
    for cmd in readme_commands((repo / "README.md").read_text()):
        why = next((reason for pattern, reason in SKIP if re.search(pattern, cmd.text)), None)
        if why:
            skipped.append(f"README line {cmd.line}: {cmd.text} -- {why}")
            continue
        for pattern, prepare in PREPARE:
            if re.search(pattern, cmd.text):
                prepare(repo)
        argv = scaled_argv(cmd)
        t0 = time.time()
        code, stdout, stderr = run_command(argv, repo, env)
        timings.append((time.time() - t0, cmd.line, cmd.text))
        want = 2 if cmd.error else 0
        problem = f"exit code {code}, expected {want}" if code != want else None
        if cmd.error and problem is None and cmd.error not in stderr:
            problem = f"error line differs: {stderr.strip()[-300:]!r}"
        if problem:
            failures.append(f"README line {cmd.line}: {cmd.text}\n  ran: {shlex.join(argv[1:])}\n  {problem}\n"
                            f"  {(stdout + stderr).strip()[-1500:]}")
