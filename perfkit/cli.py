"""``perfkit`` command line: report, compare, plot, trace, mllog, export, peak (thin:
perfkit.analysis and perfkit.flops do the work). Exit status: :data:`EXIT_CODES`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from perfkit import __version__, analysis
from perfkit._messages import logger
from perfkit.analysis._export import TARGETS as EXPORT_TARGETS
from perfkit.analysis._format import significant
from perfkit.analysis._mllog import DIVISIONS
from perfkit.analysis._render import FORMATS, printable
from perfkit.analysis._repeats import ALPHA
from perfkit.records import RecordError

EXIT_SLOWER = 1
EXIT_BAD_INPUT = 2
#: What each exit status means, as `perfkit --help` lists it.
EXIT_CODES = {
    0: "success",
    EXIT_SLOWER: "compare --fail-if-slower found a regression",
    EXIT_BAD_INPUT: "bad input: a missing or malformed run, a bad argument, an unwritable\n"
    "     output (the message on stderr names the path; --debug adds the traceback)",
}


class _StderrHandler(logging.StreamHandler):
    """Writes "perfkit: <message>" to whatever sys.stderr is when a message is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("perfkit: %(message)s"))

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        """The message with control characters escaped as on stdout (a run directory's name
        cannot drive the terminal)."""
        return printable(super().format(record))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.
    Its messages go to stderr through the "perfkit" logger while it runs (the handler is
    removed again, so calling it in-process leaves the library's logging as it was)."""
    handler, level = _StderrHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _read_stdin_runs(args)
        output = args.handler(args)
        slower = _gate(args)
    except (OSError, RecordError, ValueError, ImportError) as err:
        logger.error("error: %s", _naming_paths(str(err), args), exc_info=args.debug)
        return EXIT_BAD_INPUT
    except Exception as err:  # a malformed run no check above caught: no traceback but --debug
        message = _naming_paths(f"{type(err).__name__}: {err}", args)
        logger.error("error: %s", message, exc_info=args.debug)
        return EXIT_BAD_INPUT
    if output:
        try:
            print(output, flush=True)
        except BrokenPipeError:  # the reader left early (perfkit report runs/ | head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_SLOWER if slower else 0


def _read_stdin_runs(args: argparse.Namespace) -> None:
    """A ``-`` among a command's runs stands for the paths on standard input, one a line
    (blank lines skipped): ``find runs -name meta.json -printf '%h\\n' | perfkit report -``."""
    for field in ("runs", "others"):
        given = getattr(args, field, None)
        if given is None or "-" not in given:
            continue
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        read = [line for line in lines if line.strip()]
        if not read:
            raise ValueError("`-` was given for the runs but standard input named none")
        expanded = []
        for path in given:
            expanded.extend(read if path == "-" else [path])
        setattr(args, field, expanded)


def _gate(args: argparse.Namespace) -> bool:
    """``compare --fail-if-slower PCT``: log each metric on which the other runs are slower
    than the baseline by more than PCT with a one-sided Welch p < ``--alpha``; True when there
    is one."""
    pct = getattr(args, "fail_if_slower", None)
    if pct is None:
        return False
    found = False
    for other in args.others:
        slower = analysis.regressions(
            args.baseline, other, pct, metrics=args.metric, alpha=args.alpha
        )
        for metric, v in slower.items():
            test = "one run: no test" if v.p != v.p else f"Welch t = {v.t:.3g}, p = {v.p:.3g}"
            logger.error(
                "%s is slower than %s by more than %g%% (%s, alpha %g): %s %s -> %s (%+.1f%%)",
                other, args.baseline, pct, test, args.alpha, metric,
                significant(v.base_mean, 6, 0), significant(v.new_mean, 6, 0),
                100.0 * (v.new_mean / v.base_mean - 1.0),
            )  # fmt: skip
        found = found or bool(slower)
    return found


def _naming_paths(message: str, args: argparse.Namespace) -> str:
    """``message``, led by the runs the command was given unless it names one already."""
    if args.command == "peak":
        return message
    if hasattr(args, "runs"):
        paths = list(args.runs)
    elif hasattr(args, "baseline"):
        paths = [args.baseline, *args.others]
    else:
        paths = [args.run]
    if any(str(path) in message for path in paths):
        return message
    return f"cannot read {' '.join(repr(str(p)) for p in paths)}: {message}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfkit",
        description="Tables, comparisons, plots, traces and exports of perfkit runs.\n\n"
        "Where a command takes several runs, RUN may be a run directory, a folder holding\n"
        "runs (listed in natural order: r2 before r10) or - for paths read from standard\n"
        "input, one a line.",
        epilog="exit status:\n"
        + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"perfkit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error on stderr"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="the seed-style performance table of runs")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories or folders")
    report.add_argument("--format", choices=FORMATS, default="md", help="output format")
    report.set_defaults(handler=_report)

    compare = commands.add_parser(
        "compare",
        help="runs side by side with ratios to the first; groups of repeated runs with mean, "
        "std and 95%% interval when BASELINE holds several runs or --fail-if-slower is given",
    )
    compare.add_argument("baseline", metavar="BASELINE", help="the baseline run or group")
    compare.add_argument("others", nargs="+", metavar="RUN", help="run directories or folders")
    compare.add_argument("--format", choices=FORMATS, default="md", help="output format")
    compare.add_argument(
        "--fail-if-slower",
        type=float,
        metavar="PCT",
        help="exit 1 when a RUN group is slower than BASELINE by more than PCT percent "
        "(throughputs lower, times higher) and a one-sided Welch t-test of the runs gives "
        "p < ALPHA",
    )
    compare.add_argument(
        "--alpha",
        type=float,
        default=ALPHA,
        help="significance level of the --fail-if-slower test (default %(default)s)",
    )
    compare.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="metric the gate checks (repeatable; default every throughput and time)",
    )
    compare.set_defaults(handler=_compare)

    plot = commands.add_parser("plot", help="memory, step time and throughput over time (PNG)")
    plot.add_argument("run", metavar="RUN", help="a run directory")
    plot.add_argument("-o", "--out", required=True, help="image file (.png, .svg, .pdf)")
    plot.add_argument("--rank", type=int, default=0, help="rank whose steps are drawn")
    plot.set_defaults(handler=_plot)

    trace = commands.add_parser("trace", help="Chrome / Perfetto trace JSON (ui.perfetto.dev)")
    trace.add_argument("run", metavar="RUN", help="a run directory")
    trace.add_argument("-o", "--out", required=True, help="trace file (.json)")
    trace.set_defaults(handler=_trace)

    mllog = commands.add_parser("mllog", help="the run as MLPerf-style :::MLLOG lines")
    mllog.add_argument("run", metavar="RUN", help="a run directory")
    mllog.add_argument("--submission-org", metavar="ORG", help="submitting organization")
    mllog.add_argument("--division", choices=DIVISIONS, help="submission division")
    mllog.add_argument(
        "--submission-status", metavar="STATUS", help="onprem, cloud or preview (MLPerf's)"
    )
    mllog.add_argument(
        "--cache-clear",
        action="store_true",
        help="the caches were cleared before the run (cache_clear true; default false)",
    )
    mllog.set_defaults(handler=_mllog)

    export = commands.add_parser(
        "export", help="runs to a Parquet dataset, TensorBoard event files or MLflow"
    )
    export.add_argument("runs", nargs="+", metavar="RUN", help="run directories or folders")
    export.add_argument(
        "--to",
        nargs=2,
        required=True,
        metavar=("TARGET", "DEST"),
        help=f"TARGET one of {', '.join(EXPORT_TARGETS)}; DEST the dataset folder (parquet), "
        "the log folder (tensorboard) or the tracking URI (mlflow)",
    )
    export.set_defaults(handler=_export)
    peak = commands.add_parser(
        "peak", help="measure the device's peak matmul FLOP/s per dtype (cached on disk)"
    )
    peak.add_argument("--device", help="cpu, cuda:0, ... (default: the accelerator, else cpu)")
    peak.add_argument(
        "--dtype", action="append", metavar="DTYPE", help="fp64, fp32, tf32, fp16, bf16 "
        "(repeatable; default fp32, bf16 on the CPU, also tf32 and fp16 on an accelerator)"
    )  # fmt: skip
    peak.add_argument("--refresh", action="store_true", help="measure again, ignoring the cache")
    peak.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    peak.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds per dtype; larger sizes that would pass it are skipped",
    )
    peak.add_argument("--format", choices=FORMATS, default="md", help="output format")
    peak.set_defaults(handler=_peak)
    return parser


def _report(args: argparse.Namespace) -> str:
    return analysis.report_text(args.runs, fmt=args.format)


def _compare(args: argparse.Namespace) -> str:
    groups = args.fail_if_slower is not None
    return analysis.compare_text(
        args.baseline, *args.others, fmt=args.format, groups=groups, alpha=args.alpha
    )


def _plot(args: argparse.Namespace) -> str:
    path = analysis.save_plot(args.run, args.out, rank=args.rank)
    return f"wrote {path}"


def _trace(args: argparse.Namespace) -> str:
    path = analysis.write_trace(args.run, args.out)
    return f"wrote {path} (open it in https://ui.perfetto.dev)"


def _mllog(args: argparse.Namespace) -> str:
    lines = analysis.mllog_lines(
        args.run,
        submission_org=args.submission_org,
        division=args.division,
        submission_status=args.submission_status,
        cache_clear=args.cache_clear,
    )
    return "\n".join(lines)


def _export(args: argparse.Namespace) -> str:
    target, dest = args.to
    done = analysis.export(args.runs, target, dest)
    return f"exported {len(done)} run{'s' if len(done) != 1 else ''} to {target} {dest}"


def _peak(args: argparse.Namespace) -> str:
    from perfkit.analysis._render import _csv, _markdown
    from perfkit.flops._measure import PEAK_COLUMNS, peak_rows

    rows = peak_rows(
        args.device,
        args.dtype,
        cache=not args.no_cache,
        refresh=args.refresh,
        time_limit_s=args.time_limit,
    )
    header = list(PEAK_COLUMNS)
    if args.format == "json":
        return json.dumps([dict(zip(header, row, strict=True)) for row in rows], indent=2)
    return _markdown(header, rows) if args.format == "md" else _csv(header, rows)


if __name__ == "__main__":
    raise SystemExit(main())
