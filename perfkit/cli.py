"""``perfkit`` command line: report, compare, plot, trace, mllog (thin: perfkit.analysis does
the work). Exit status 0 on success, 2 on bad input (message on stderr naming the path)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from perfkit import analysis
from perfkit.records import RecordError

FORMATS = analysis.FORMATS
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        output = args.handler(args)
    except (OSError, RecordError, ValueError, ImportError) as err:
        print(f"perfkit: error: {_naming_paths(str(err), args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # a malformed run no check above caught: still no traceback
        message = f"{type(err).__name__}: {err}"
        print(f"perfkit: error: {_naming_paths(message, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if output:
        try:
            print(output, flush=True)
        except BrokenPipeError:  # the reader left early (perfkit report runs/ | head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _naming_paths(message: str, args: argparse.Namespace) -> str:
    """``message``, led by the runs the command was given unless it names one already."""
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
        prog="perfkit", description="Tables, comparisons, plots and traces of perfkit runs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="the seed-style performance table of runs")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories or folders")
    report.add_argument("--format", choices=FORMATS, default="md", help="output format")
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="runs side by side with ratios to the first")
    compare.add_argument("baseline", metavar="BASELINE", help="the baseline run directory")
    compare.add_argument("others", nargs="+", metavar="RUN", help="run directories or folders")
    compare.add_argument("--format", choices=FORMATS, default="md", help="output format")
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
    mllog.set_defaults(handler=_mllog)
    return parser


def _report(args: argparse.Namespace) -> str:
    return analysis.report_text(args.runs, fmt=args.format)


def _compare(args: argparse.Namespace) -> str:
    return analysis.compare_text(args.baseline, *args.others, fmt=args.format)


def _plot(args: argparse.Namespace) -> str:
    path = analysis.save_plot(args.run, args.out, rank=args.rank)
    return f"wrote {path}"


def _trace(args: argparse.Namespace) -> str:
    path = analysis.write_trace(args.run, args.out)
    return f"wrote {path} (open it in https://ui.perfetto.dev)"


def _mllog(args: argparse.Namespace) -> str:
    return "\n".join(analysis.mllog_lines(args.run))


if __name__ == "__main__":
    raise SystemExit(main())
