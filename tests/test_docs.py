"""The README and docs/*.md, kept honest where they quote the code: every
`python -m bench.<module> ...` they show parses with that module's own parser, every
flag given to a script exists in it, every relative link and repository path they
name exists, the README's presets table has a row per preset with the cell counts
the code expands to, and the `bench.compare` outputs they quote of the committed
reference runs are what the command prints today. Fast: nothing trains."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import cell, compare, history, report, run, scale
from bench.orchestrate.plan import requested_matrix
from bench.orchestrate.presets import PRESETS
from strategies.registry import Machine

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "bench.run": run.build_parser, "bench.compare": compare.build_parser,
    "bench.history": history.build_parser, "bench.report": report.build_parser,
    "bench.cell": cell.build_parser, "bench.scale": scale.build_parser}
JOB_SCRIPT = "scripts/slurm/mnist-bench.sbatch"  # its arguments go to bench.run
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
# A path into the repository, as pages name them in inline code: `bench/metrics.py`,
# `bench/metrics.py:SANITY_VAL_IMAGES`, `results/reference/cpu-AMD-EPYC-2-cores/`.
REPO_PATH = re.compile(r"(?:bench|tests|scripts|strategies|mnist_core|docs|results/reference"
                       r"|\.ci)/[\w./-]*(?::\w+)?")
TWO_CPUS = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=False)


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def fenced_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block."""
    language, lines = None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([\w-]*)", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence:
            yield language, lines
            language = None
        elif language is not None:
            lines.append(line)


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.DOTALL | re.MULTILINE)


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, whitespace joined (a span may wrap)."""
    text = prose(text)
    spans = re.findall(r"``(.+?)``", text, flags=re.DOTALL)
    text = re.sub(r"``(.+?)``", "", text, flags=re.DOTALL)
    spans += re.findall(r"`([^`]+)`", text)
    return [" ".join(span.split()) for span in spans]


def shell_commands(language: str, lines: list[str]) -> Iterator[str]:
    """A shell block's commands (continuations joined); an output block's `$ ` lines."""
    if language in SHELL_LANGUAGES:
        yield from "\n".join(lines).replace("\\\n", " ").splitlines()
    elif language == "":
        yield from (line[2:] for line in lines if line.startswith("$ "))


def quoted_commands(page: Path) -> Iterator[list[str]]:
    """Every command a page quotes, split into words (comments dropped)."""
    text = page.read_text()
    for language, lines in fenced_blocks(text):
        for command in shell_commands(language, lines):
            if command.strip() and not command.lstrip().startswith("#"):
                yield shlex.split(command, comments=True)
    for span in inline_code(text):
        if span.startswith(("python -m bench.", "scripts/", "python scripts/")):
            yield shlex.split(span)


def module_invocations(page: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, arguments) of every `-m bench.X` (python, torchrun, srun) a page quotes,
    and of the job script, whose arguments are bench.run's."""
    for words in quoted_commands(page):
        for i, word in enumerate(words[:-1]):
            if word == "-m" and words[i + 1].startswith("bench."):
                yield words[i + 1], words[i + 2:]
            elif word == JOB_SCRIPT:
                yield "bench.run", words[i + 1:]


def script_invocations(page: Path) -> Iterator[tuple[str, list[str]]]:
    for words in quoted_commands(page):
        for i, word in enumerate(words):
            if word.startswith("scripts/") and word != JOB_SCRIPT:
                yield word, words[i + 1:]
                break


def parse_error(module: str, args: list[str]) -> str | None:
    """None when ``module``'s own parser takes ``args``; else what it said."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            PARSERS[module]().parse_args(args)
        except SystemExit as exit_info:
            if exit_info.code:
                return err.getvalue().strip().splitlines()[-1]
    return None


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_quoted_bench_command_parses(page: Path) -> None:
    invocations = list(module_invocations(page))
    problems = [f"python -m {module} {shlex.join(args)}: "
                + (f"no parser known for {module}" if module not in PARSERS
                   else str(parse_error(module, args)))
                for module, args in invocations
                if module not in PARSERS or parse_error(module, args) is not None]
    assert not problems, "\n".join(problems)


def test_the_pages_quote_every_entry_point() -> None:
    """The parser check above reads something: each entry point is quoted somewhere."""
    quoted = {module for page in PAGES for module, _ in module_invocations(page)}
    assert quoted == set(PARSERS)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_flag_given_to_a_script_exists_in_it(page: Path) -> None:
    problems = []
    for script, args in script_invocations(page):
        path = REPO / script
        if not path.is_file():
            problems.append(f"{script}: no such script")
            continue
        source = path.read_text()
        for flag in (arg.split("=")[0] for arg in args if re.match(r"--\w", arg)):
            # bash: a `case` label `--flag)`; Python: add_argument("--flag", ...)
            if f"{flag})" not in source and f'"{flag}"' not in source:
                problems.append(f"{script} {shlex.join(args)}: {flag} is not an option of it")
    assert not problems, "\n".join(problems)


# Other tools' options the pages name: pytest's, pytest-benchmark's and pytest-xdist's,
# torchrun's and sbatch's.
OTHER_TOOLS_FLAGS = {"--pdb", "--benchmark-enable", "--benchmark-autosave",
                     "--benchmark-compare", "--dist",
                     "--standalone", "--nproc_per_node", "--nnodes", "--node_rank",
                     "--master_addr", "--master_port", "--nodes", "--ntasks-per-node",
                     "--gpus-per-node", "--cpus-per-task", "--requeue", "--open-mode",
                     "--output", "--partition", "--account", "--time"}


def known_flags() -> set[str]:
    """Every option of an entry point, of a script under scripts/, or of another tool."""
    flags = set(OTHER_TOOLS_FLAGS)
    for build in PARSERS.values():
        flags |= {flag for action in build()._actions for flag in action.option_strings}
    for script in (path for path in (REPO / "scripts").rglob("*") if path.is_file()):
        flags |= set(re.findall(r"""["(\s](--[a-z][\w-]*)(?=["|)])""", script.read_text()))
    return flags


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_flag_named_in_the_text_exists(page: Path) -> None:
    """A flag named in prose (`--cell-timeout`, `--fail-on-change`) or given in a
    quoted command is an option of something: a renamed or removed flag fails here."""
    text = page.read_text()
    named = [flag for span in inline_code(text)
             for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span)]
    named += [word.split("=")[0] for words in quoted_commands(page) for word in words
              if re.match(r"--[a-z]", word)]
    assert not sorted(set(named) - known_flags())


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces
    to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: Path) -> None:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_text, _, anchor = target.partition("#")
        path = (page.parent / path_text).resolve() if path_text else page
        if not path.exists():
            problems.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            problems.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page: Path) -> None:
    problems = []
    for span in inline_code(page.read_text()):
        if not REPO_PATH.fullmatch(span):
            continue
        path_text, _, name = span.partition(":")
        path = REPO / path_text
        if not path.exists():
            problems.append(f"`{span}`: no such path")
        elif name and not re.search(rf"\b{name}\b", path.read_text()):
            problems.append(f"`{span}`: {path_text} has no {name}")
    assert not problems, "\n".join(problems)


def presets_table() -> dict[str, tuple[int, int]]:
    """The README's presets table: name -> (cells on a 2-core CPU, cells on 8 GPUs)."""
    rows = re.findall(r"^\| `([\w-]+)` \| (\d+) / (\d+) \|", (REPO / "README.md").read_text(),
                      flags=re.MULTILINE)
    return {name: (int(cpu), int(gpus)) for name, cpu, gpus in rows}


def cell_count(preset: str, machine: Machine) -> int:
    """Cells as `python -m bench.run` counts them in its listing."""
    matrix = requested_matrix(run.build_parser().parse_args(["--matrix", preset]), machine)
    assert matrix is not None
    return len(matrix.cells)


def test_the_readme_presets_table_has_every_preset_with_its_cell_counts() -> None:
    table = presets_table()
    assert list(table) == list(PRESETS)  # a row per preset (docs/ARCHITECTURE.md says so)
    counted = {name: (cell_count(name, TWO_CPUS), cell_count(name, Machine.assume_gpus(8)))
               for name in PRESETS}
    assert table == counted


def quoted_outputs(page: Path, module: str) -> Iterator[tuple[list[str], list[str]]]:
    """(arguments, the lines shown under them) of each output block that starts with
    `$ python -m <module> ...`."""
    for language, lines in fenced_blocks(page.read_text()):
        if language == "" and lines and lines[0].startswith(f"$ python -m {module} "):
            yield shlex.split(lines[0])[4:], lines[1:]


def non_blank(lines: list[str]) -> list[str]:
    return [line.rstrip() for line in lines if line.strip()]


COMPARISONS = [pytest.param(args, shown, id=" ".join(args)[:70])
               for args, shown in quoted_outputs(REPO / "docs" / "comparing.md", "bench.compare")]


def test_the_compare_outputs_are_quoted() -> None:
    assert len(COMPARISONS) == 3  # refused, --force, --across


@pytest.mark.parametrize("args, shown", COMPARISONS)
def test_a_quoted_compare_output_is_what_compare_prints(
        args: list[str], shown: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed reference runs through `bench.compare` as quoted (`--out` into a
    scratch folder): the same lines, stdout and stderr in the order printed."""
    monkeypatch.chdir(REPO)
    if "--out" in args:
        at = args.index("--out")
        args = [*args[:at], "--out", str(tmp_path), *args[at + 2:]]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        compare.main(args)
    lines = [line for line in non_blank(printed.getvalue().splitlines())
             if not line.startswith("written: ")]
    assert lines == non_blank(shown)
