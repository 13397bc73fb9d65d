"""The README and `aiaas --help` agree: every `aiaas …` line the README shows names a command that exists, with
flags that command has; every top-level command and group is in the README; shell completion works in bash."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from aiaas.cli.main import app as cli_app

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`((?:\.venv/bin/)?aiaas [^`]+)`")
COMMAND = re.compile(r"^(?:\$\(|\S+=\$\()?(?:\.venv/bin/)?aiaas\s")
ROOT = typer.main.get_command(cli_app)


def readme_command_lines() -> list[str]:
    """`aiaas …` lines of the README's shell blocks and inline code, comments stripped."""
    text = README.read_text()
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if COMMAND.search(line):
                found.append(line)
    found += [span for span in INLINE.findall(text) if not span.startswith("aiaas/")]
    return found


def resolve(line: str):
    """(command path, click command, the flags used) for one README line."""
    words = shlex.split(line.replace("$(", " ").replace(")", " ").replace("…", "x"))
    words = words[next(i for i, w in enumerate(words) if w.endswith("aiaas")) + 1:]
    cmd, path = ROOT, ["aiaas"]
    while getattr(cmd, "commands", None) and words and words[0] in cmd.commands:
        cmd = cmd.commands[words[0]]
        path.append(words.pop(0))
    flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-"]
    if getattr(cmd, "commands", None) and words and not words[0].startswith("-"):
        path.append(words[0])  # a word that is no command of this group: named so the test fails on it
    return " ".join(path), cmd, flags


LINES = readme_command_lines()


def test_the_readme_shows_commands() -> None:
    assert len(LINES) >= 30, LINES  # the command list is there, not lost in an edit


@pytest.mark.parametrize("line", LINES)
def test_each_readme_command_exists_with_its_flags(line: str) -> None:
    path, cmd, flags = resolve(line)
    # Lines name commands, not groups (`aiaas orgs` alone would only print its help); `aiaas --flag` is the root.
    assert not getattr(cmd, "commands", None) or path == "aiaas", f"{line!r}: no command {path}"
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    if path == "aiaas":
        opts |= {"--install-completion", "--show-completion"}
    unknown = [f for f in flags if f not in opts]
    assert not unknown, f"{line!r}: {path} has no {unknown}"
    help_out = CliRunner().invoke(cli_app, [*path.split()[1:], "--help"])
    assert help_out.exit_code == 0, help_out.output


def test_every_top_level_command_and_group_is_in_the_readme() -> None:
    shown = {resolve(line)[0].split()[1] for line in LINES if len(resolve(line)[0].split()) > 1}
    listed = {name for name, cmd in ROOT.commands.items() if not getattr(cmd, "hidden", False)}
    missing = listed - shown
    assert not missing, f"in `aiaas --help` but not in the README: {sorted(missing)}"
    resolved = {resolve(line)[0] for line in LINES}
    for name, group in ROOT.commands.items():
        for sub in getattr(group, "commands", {}):
            path = f"aiaas {name} {sub}"  # a command, or a nested group shown through its commands
            assert any(r == path or r.startswith(path + " ") for r in resolved), f"{path} not in README"


def test_readme_documents_every_exit_code() -> None:
    from aiaas.cli import common

    text = README.read_text()
    table = dict(re.findall(r"^\| (\d) \| (.+) \|$", text, re.MULTILINE))
    codes = {v for k, v in vars(common).items() if k.startswith("EXIT_")}
    assert set(map(int, table)) == codes, (table, codes)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_flags(tmp_path: Path) -> None:
    """The script `aiaas --show-completion bash` prints, sourced into bash, completes as a user's shell would."""
    shim = tmp_path / "aiaas"  # as the installed entry point: the program is named after its file
    shim.write_text(f"#!{sys.executable}\nfrom aiaas.cli.main import app\napp()\n")
    shim.chmod(0o755)
    # A user's shell, not this test process's environment (other tests in the process may have added to it).
    env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
           if k in os.environ} | {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SHELL": "/bin/bash"}
    # Typer picks the shell by walking up the process tree (shellingham): run it from bash, as a user would. (Under
    # `make test` the nearest ancestors are python, sh and make, and detection found no shell: "Shell  not
    # supported".) `; exit` keeps bash from exec-ing the command, which would leave bash out of the tree.
    shown = subprocess.run(["bash", "-c", "aiaas --show-completion; exit $?"], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0, f"exit {shown.returncode}: {shown.stderr[-3000:]}"
    script = shown.stdout
    assert "complete" in script and "_AIAAS_COMPLETE" in script

    def complete(*words: str) -> set[str]:
        line = " ".join(shlex.quote(w) for w in words)
        program = (f"source {shlex.quote(str(tmp_path / 'c.sh'))}; COMP_WORDS=({line}); "
                   f"COMP_CWORD={len(words) - 1}; _aiaas_completion aiaas {shlex.quote(words[-1])}; "
                   'printf "%s\\n" "${COMPREPLY[@]}"')
        out = subprocess.run(["bash", "-c", program], env=env, capture_output=True, text=True, timeout=60, check=False)
        return set(out.stdout.split())

    (tmp_path / "c.sh").write_text(script)
    assert {"deploy", "deployments"} <= complete("aiaas", "dep")
    assert complete("aiaas", "jobs", "w") == {"wait"}
    assert "--timeout" in complete("aiaas", "jobs", "wait", "--t")
