"""The ``foundry`` command line (also ``python -m foundry``)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from foundry.errors import ConfigError, FoundryError, InputDataError
from foundry.paths import MODELS_DIR, NOTEBOOKS_DIR, ROOT
from foundry.secrets import redact

#: ``--provider`` choices: the names of foundry.generate.registry, spelled out here because
#: importing the generate package would slow every command down (tests/test_registry.py
#: holds the two to each other).
PROVIDER_NAMES = ("offline", "gemini", "openai", "dataset")

#: Exit status when stdout is closed before the answers are written (``| head``): 128 +
#: SIGPIPE, what a shell reports for a process that the closed pipe stopped.
EXIT_BROKEN_PIPE = 141


def _cmd_forge(args: argparse.Namespace) -> int:
    from foundry.forge import ForgeError, forge

    try:
        result = forge(
            args.blueprint,
            steps=args.steps,
            provider=args.provider,
            run_id=args.run_id,
            models_dir=args.models_dir,
            target_per_task=args.target,
            allow_exam_failures=args.allow_exam_failures,
        )
    except ForgeError as exc:
        print(f"foundry forge: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    total = sum(result.seconds.values())
    print(f"done in {total:.1f} s; run folder {result.run_dir}; models in {result.models_dir}")
    return 0


#: Invalid-UTF-8 warnings printed per command; later ones are counted in one last line.
MAX_UTF8_WARNINGS = 10


def decode_line(raw: bytes, where: str, warn: list[str]) -> str:
    """One input line as text: invalid UTF-8 becomes U+FFFD (one per maximal invalid
    subsequence, as WHATWG and the Unicode Standard recommend; JavaScript's TextDecoder does
    the same), and ``where`` is noted in ``warn``. docs/preprocessor-spec.md, section 5."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        warn.append(where)
        return raw.decode("utf-8", errors="replace")


def warn_invalid_utf8(prog: str, where: list[str]) -> None:
    """The stderr warnings of :func:`decode_line` (the same lines the Node CLI prints)."""
    for place in where[:MAX_UTF8_WARNINGS]:
        print(f"{prog}: warning: {place}: invalid UTF-8 replaced by U+FFFD", file=sys.stderr)
    if len(where) > MAX_UTF8_WARNINGS:
        print(f"{prog}: warning: {len(where) - MAX_UTF8_WARNINGS} more lines held invalid UTF-8",
              file=sys.stderr)


def split_lines(data: bytes) -> list[bytes]:
    """stdin split at LF only; a final empty piece dropped; trailing CR/LF bytes removed."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.rstrip(b"\r\n") for line in lines]


def _read_texts(texts: list[str]) -> list[str]:
    warn: list[str] = []
    if texts:
        # Arguments the OS could not decode arrive as lone surrogates (surrogateescape).
        out = [decode_line(os.fsencode(t), f"argument {i}", warn)
               for i, t in enumerate(texts, 1)]
    else:
        try:
            data = sys.stdin.buffer.read()
        except OSError as exc:
            raise InputDataError(f"cannot read stdin: {_describe_os_error(exc)}") from None
        out = [decode_line(raw, f"line {i}", warn) for i, raw in enumerate(split_lines(data), 1)]
    warn_invalid_utf8("foundry predict", warn)
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    from foundry.runtime import MicroModel

    model = MicroModel.load(args.task, models_dir=args.models_dir)
    texts = _read_texts(args.text)
    write = sys.stdout.write
    rules = bool(model.reflex)  # the JSON lines of a model with rules say which one answered
    for text, p in zip(texts, model.predict_many(texts), strict=True):
        if args.json:
            write(json.dumps(p.to_json(text, rules), ensure_ascii=False) + "\n")
        else:
            mark = f"  (rule {p.rule})" if p.rule else (
                "" if p.confident else f"  (not sure: {p.score:.2f})")
            write(f"{p.label}{mark}\n")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from foundry.export import recover_pending
    from foundry.runtime import ArtifactError, MicroModel, check_conformance

    models_dir = Path(args.models_dir)
    if models_dir.is_dir():
        for task in recover_pending(models_dir):
            print(f"completed an interrupted export of {task} (its files were committed)")
    tasks = args.task or sorted(
        p.name.removesuffix("_preprocessor.bin") for p in models_dir.glob("*_preprocessor.bin")
    )
    if not tasks:
        print(f"foundry verify: no *_preprocessor.bin in {models_dir}", file=sys.stderr)
        return 1
    failed = 0
    for task in tasks:
        try:
            model = MicroModel.load(task, models_dir=models_dir)
            report = check_conformance(model, models_dir / f"{task}_conformance.json")
        except ArtifactError as exc:
            print(f"FAIL {task}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if report.ok:
            print(f"ok   {task}: {report.vectors} conformance vectors reproduced")
        else:
            failed += 1
            print(f"FAIL {task}: {len(report.failures)} of {report.vectors} vectors differ:",
                  file=sys.stderr)
            for line in report.failures[:20]:
                print(f"  {line}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_lab(args: argparse.Namespace) -> int:
    import os
    import subprocess

    notebook = NOTEBOOKS_DIR / "10_tester.ipynb"
    env = {**os.environ, "FOUNDRY_MODELS_DIR": str(Path(args.models_dir).resolve())}
    cmd = [sys.executable, "-m", "jupyterlab", str(notebook.relative_to(ROOT))]
    if args.port is not None:
        cmd.append(f"--ServerApp.port={args.port}")
    if args.ip is not None:
        cmd.append(f"--ServerApp.ip={args.ip}")
    if args.no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # JupyterLab refuses to start as root without it
    return subprocess.call(cmd, cwd=ROOT, env=env)


def _cmd_blueprint_check(args: argparse.Namespace) -> int:
    from foundry.blueprint import field_reference, resolve_blueprint_dir
    from foundry.check import check_blueprint

    if args.explain:
        for path, default, description in field_reference():
            print(f"{path}" + (f" = {default}" if default else ""))
            print(f"    {description}")
        if args.path is None:
            return 0
        print()
    elif args.path is None:
        raise ConfigError("check: name a blueprint to check (or pass --explain)")
    # A blueprint that is not there is a usage error (exit 2); a broken one exits 1.
    report = check_blueprint(resolve_blueprint_dir(args.path), provider=args.provider)
    print(report.format(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _cmd_blueprint_new(args: argparse.Namespace) -> int:
    from foundry.scaffold import new_blueprint

    root = new_blueprint(args.name, task=args.task)
    task = args.task or args.name
    shown = root.relative_to(ROOT) if root.is_relative_to(ROOT) else root
    print(f"created blueprint {args.name!r} with task {task!r} in {shown}/")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(root)}")
    print(f"""
next:
  foundry blueprint check {args.name}      # checks every file a forge reads
  foundry forge {args.name}                # forges it offline (models in models/)
  foundry predict {task} 谢谢，说得很清楚
the guide: docs/your-first-blueprint.md""")
    return 0


def _cmd_grammar_audit(args: argparse.Namespace) -> int:
    from foundry.blueprint import load_blueprint
    from foundry.generate.audit import audit_grammar, format_audit

    bp = load_blueprint(args.blueprint)
    tasks = [bp.task(name) for name in args.task] if args.task else bp.tasks
    for i, task in enumerate(t for t in tasks if t.grammar):
        audit = audit_grammar(bp, task, rows=args.rows, seed=args.seed, confident=args.confident)
        print(("\n" if i else "") + format_audit(audit, top=args.top))
        if args.errors_csv:
            path = Path(args.errors_csv.replace("{task}", task.name))
            audit.errors.to_csv(path, index=False)
            print(f"\nall {len(audit.errors)} errors: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry", description="Forge and run kilobyte-size text classifiers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("forge", help="run the pipeline notebooks of a blueprint")
    p.add_argument("blueprint", help="name under blueprints/ or a path")
    p.add_argument("--steps", default=None, help="comma list of generate,refine,train,evaluate,export")
    p.add_argument("--provider", choices=PROVIDER_NAMES, default=None)
    p.add_argument("--run-id", default=None)
    p.add_argument("--models-dir", default=str(MODELS_DIR))
    p.add_argument("--target", type=int, default=None, help="rows per task (overrides the blueprint)")
    p.add_argument("--allow-exam-failures", action="store_true",
                   help="export even when the exam accuracy is below evaluate.exam_min_accuracy")
    p.set_defaults(func=_cmd_forge)

    p = sub.add_parser("predict", help="classify texts (arguments, or one per line on stdin)")
    p.add_argument("task")
    p.add_argument("text", nargs="*")
    p.add_argument("--models-dir", default=str(MODELS_DIR))
    p.add_argument("--json", action="store_true", help="one JSON object per input line")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("verify", help="replay the conformance vectors of forged models")
    p.add_argument("task", nargs="*")
    p.add_argument("--models-dir", default=str(MODELS_DIR))
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("lab", help="open the tester notebook in JupyterLab")
    p.add_argument("--models-dir", default=str(MODELS_DIR))
    p.add_argument("--port", type=int, default=None, help="port of JupyterLab (default 8888, "
                   "or the next free one)")
    p.add_argument("--ip", default=None, help="address to listen on (default localhost; "
                   "0.0.0.0 for every interface)")
    p.add_argument("--no-browser", action="store_true")
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("blueprint", help="blueprint tools")
    bsub = p.add_subparsers(dest="blueprint_command", required=True)
    c = bsub.add_parser("check", help="check everything a forge of a blueprint will read",
                        description="Check blueprint.yaml and every file it names (constitution, "
                        "grammar, seeds, exam, corrections) without running a stage; every "
                        "error with file, line and field. Exit 1 if there is an error.")
    c.add_argument("path", metavar="BLUEPRINT", nargs="?", help="name under blueprints/ or a path")
    c.add_argument("--provider", choices=PROVIDER_NAMES, default=None,
                   help="the provider the forge will use (default: the blueprint's)")
    c.add_argument("--explain", action="store_true",
                   help="print every field a blueprint may set, its default and what it does")
    c.set_defaults(func=_cmd_blueprint_check)
    n = bsub.add_parser("new", help="scaffold a small blueprint that forges offline",
                        description="Create blueprints/NAME/ with a commented blueprint.yaml, "
                        "a constitution, a small grammar, seeds and an exam; it forges offline "
                        "as it is. Guide: docs/your-first-blueprint.md.")
    n.add_argument("name", help="blueprint name (lower case letters, digits, _)")
    n.add_argument("--task", default=None, help="name of its task (default: NAME)")
    n.set_defaults(func=_cmd_blueprint_new)

    p = sub.add_parser("grammar", help="offline grammar tools")
    gsub = p.add_subparsers(dest="grammar_command", required=True)
    a = gsub.add_parser("audit", help="templates whose rows a cross-validated model contradicts")
    a.add_argument("blueprint", help="name under blueprints/ or a path")
    a.add_argument("--task", action="append", help="task to audit (repeatable; default all)")
    a.add_argument("--rows", type=int, default=None,
                   help="sentences to sample (default generation.target_per_task)")
    a.add_argument("--seed", type=int, default=None, help="sampling seed (default generation.seed)")
    a.add_argument("--confident", type=float, default=0.9,
                   help="top probability from which an error counts as confident (default 0.9)")
    a.add_argument("--top", type=int, default=20, help="templates listed (default 20)")
    a.add_argument("--errors-csv", default=None,
                   help="write every error to this CSV ({task} is replaced by the task name)")
    a.set_defaults(func=_cmd_grammar_audit)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``predict`` accepts its options anywhere among the texts."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command == "predict":
        # Texts after an option (`predict TASK --json 你好`) are left over, in order.
        options = [a for a in rest if a.startswith("-")]
        if options:
            parser.error(f"unrecognized arguments: {' '.join(options)}")
        args.text = [*args.text, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def main(argv: list[str] | None = None) -> int:
    """Run a command; a :class:`~foundry.errors.FoundryError` prints one line on stderr.

    Only the project's own errors (the user's to fix: a blueprint, an input file, a damaged
    model file, a refused gate) and the operating system refusing I/O (an unreadable file, a
    full disk, a closed pipe) become one line; anything else is a bug and raises with its
    traceback.

    Exit status: 0 ok; 1 a model file, input data, gate, generation or system problem
    (unreadable file, full disk); 2 a usage or configuration error; 130 Ctrl-C;
    141 stdout closed early (``| head``), silently.
    """
    args = parse_args(argv)
    prog = f"foundry {args.command}"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a full disk or a closed pipe is reported here
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except FoundryError as exc:
        print(f"{prog}: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if exc.filename is None:  # stdout itself (a full disk, a closed terminal)
            _silence_stdout()
            print(f"{prog}: cannot write the output: {_describe_os_error(exc)}", file=sys.stderr)
        else:
            print(f"{prog}: {redact(_describe_os_error(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
