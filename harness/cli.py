"""The one command-line convention of the experiment commands (and ``simulate.py`` where it applies).

* ``--data-dir`` (else ``$FEDREC_DATA_DIR``, else the cache), resolved to an absolute folder so cached sweep
  cells record where their data came from;
* lists — ``--seeds``, ``--datasets`` and the like — accept ``0,1,2``, ``0 1 2`` or a mix;
* ``--workers`` (parallel sweep cells on Ray workers) and ``--out`` (the output folder);
* every error is one line on stderr, ``error: …``: exit 2 for bad input (options, settings, missing or malformed
  data), 1 for a run that failed, 130 for Ctrl-C (rerunning the same command resumes: cells are cached, a cell
  resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from federation.config import ConfigError, SimulationConfig
from federation.plan import dataset_for
from recsys.data.errors import DatasetError
from recsys.data.registry import DATA_DIR_ENV
from server.loop import RunFailed

Main = Callable[[Sequence[str] | None], int]


class UsageError(ValueError):
    """A malformed command line; the message names the option."""


class CommandParser(argparse.ArgumentParser):
    """``argparse`` that raises ``UsageError`` (one line via ``guarded``) instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def listed(kind: Callable[[str], Any], option: str, what: str) -> type[argparse.Action]:
    """An action for ``nargs="+"`` options whose values may be separated by commas, spaces or both."""

    class ListAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None) -> None:
            parts = [p.strip() for value in values for p in str(value).split(",") if p.strip()]
            try:
                setattr(namespace, self.dest, [kind(p) for p in parts])
            except ValueError:
                raise UsageError(f"{option} expects comma-separated {what} (commas or spaces), got "
                                 f"{' '.join(map(str, values))!r}") from None

    return ListAction


def add_list(parser: argparse.ArgumentParser, option: str, kind: Callable[[str], Any], what: str, default: list,
             help: str, empty: str = "all") -> None:
    """A list option; ``empty`` says in the help what an empty default means."""
    parser.add_argument(option, nargs="+", action=listed(kind, option, what), default=list(default), metavar="X",
                        help=f"{help} (comma- or space-separated; default: {','.join(map(str, default)) or empty})")


def add_common(parser: argparse.ArgumentParser, *, out: str, seeds: Sequence[int] | None = (0, 1, 2),
               datasets: Sequence[str] | None = None) -> None:
    """``--data-dir``, ``--seeds`` and ``--datasets`` (each when its default is given), ``--workers`` and ``--out``."""
    parser.add_argument("--data-dir", default="", help=f"folder laid out like shared/datasets (else ${DATA_DIR_ENV}, "
                        "else ~/.cache/fedrec-sim/datasets)")
    if seeds is not None:
        add_list(parser, "--seeds", int, "integers", list(seeds), "seeds, one run each")
    if datasets is not None:
        add_list(parser, "--datasets", str, "names", list(datasets), "datasets")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel runs on Ray workers, one core each (1: runs in this process on every core)")
    parser.add_argument("--out", default=out, help="output folder (cells are cached under <out>/cells)")


def data_dir(value: str) -> str:
    """``--data-dir``, else ``$FEDREC_DATA_DIR``, as an absolute path ("" leaves the choice to the loader's cache)."""
    chosen = value or os.environ.get(DATA_DIR_ENV, "")
    return str(Path(chosen).expanduser().resolve()) if chosen else ""


def check_choices(option: str, values: Sequence[Any], allowed: Sequence[Any]) -> None:
    """``UsageError`` naming ``option`` when a listed value is not one of ``allowed``."""
    if unknown := [str(v) for v in values if v not in allowed]:
        raise UsageError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(map(str, allowed))}")


def check_settings(settings: Sequence[dict[str, Any]]) -> None:
    """Validate every run's settings and load each distinct dataset once, so bad settings and missing or malformed
    data fail in one line before hours of runs."""
    seen = set()
    for params in settings:
        config = SimulationConfig(**params)
        if config.dataset != "synthetic" and (config.dataset, config.data_dir) not in seen:
            seen.add((config.dataset, config.data_dir))
            dataset_for(config)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if hasattr(args, "data_dir"):
        args.data_dir = data_dir(args.data_dir)
    return args


def guarded(interrupted: str = "interrupted; rerun the same command to resume") -> Callable[[Main], Main]:
    """Decorate a command's ``main`` so every expected failure is one line on stderr with its exit code, and
    Ctrl-C prints ``interrupted`` and exits 130."""
    return functools.partial(_guard, interrupted=interrupted)


def _guard(main: Main, interrupted: str) -> Main:
    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except (UsageError, ConfigError, DatasetError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except RunFailed as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return 130

    return wrapper
