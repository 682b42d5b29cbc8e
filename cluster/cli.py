"""The ``actlake`` command line, built from one table of commands and the analysis registry.

Each command is a config dataclass (its flags, with their help, are generated from it) and a function
of that config returning an exit code or a result printed as JSON. Only the command being run is
imported, so ``actlake --help`` and ``actlake info`` stay fast.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass

from simple_parsing import DashVariant

from analysis.registry import ANALYSES, GROUPS
from cluster.jobfiles import JobFileParser
from shards.errors import ActlakeError
from shards.invocation import set_command_line
from shards.printable import printable
from shards.secrets import redact_message


@dataclass(frozen=True)
class Command:
    config: str  #: "module:Class" of the config dataclass
    run: str  #: "module:function" taking the config; returns an exit code or a result with to_json()
    help: str
    job_file: bool = False  #: takes --config JOB.yaml (and can be submitted to a cluster)


COMMANDS: dict[str, Command] = {
    "info": Command("cluster.commands:InfoConfig", "cluster.dataset_commands:cmd_info",
                    "Describe a dataset: hooks, rows, units, dtypes, bytes, provenance, statistics."),
    "verify": Command("cluster.commands:VerifyConfig", "cluster.dataset_commands:cmd_verify",
                      "Check every committed file, commit record and stats file against the manifest, and every kept "
                      "version against its record and the chain; --repair fixes what it can."),
    "versions": Command("cluster.commands:VersionsConfig", "cluster.dataset_commands:cmd_versions",
                        "List a dataset's versions: time, rows, units, and the job or tick that made each."),
    "vacuum": Command("cluster.commands:VacuumConfig", "cluster.dataset_commands:cmd_vacuum",
                      "Remove all but the newest --keep N versions and the files only they name."),
    "unlock": Command("cluster.commands:UnlockConfig", "cluster.dataset_commands:cmd_unlock",
                      "Remove a dataset's write lock once you know its writer is dead."),
    "ls": Command("cluster.commands:LsConfig", "cluster.dataset_commands:cmd_ls", "List the datasets under a prefix."),
    "copy": Command("cluster.share_commands:CopyConfig", "cluster.share_commands:cmd_copy",
                    "Copy a dataset (a version, some hooks or rows) elsewhere, checking every byte; rerun to resume.",
                    True),
    "export": Command("cluster.share_commands:ExportConfig", "cluster.share_commands:cmd_export",
                      "Write a hook of a dataset in SAELens' cached-activations layout (--format saelens).", True),
    "card": Command("cluster.share_commands:CardConfig", "cluster.share_commands:cmd_card",
                    "Write a dataset's card (README.md with Hugging Face Hub metadata) from its manifest."),
    "demo": Command("cluster.commands:DemoConfig", "cluster.dataset_commands:cmd_demo",
                    "Write a dataset of synthetic activations, then describe, verify and read it back."),
    "extract": Command("ingest.config:ExtractConfig", "cluster.extract_command:cmd_extract",
                       "Run a model over a corpus or images on Ray and write an activation dataset.", True),
    "import": Command("ingest.imports.run:ImportConfig", "ingest.imports.run:import_features",
                      "Import features computed elsewhere (Net2Brain, thingsvision, Parquet) into a dataset.", True),
    "submit": Command("cluster.commands:SubmitConfig", "cluster.jobs:cmd_submit",
                      "Submit a job file (the options of a command as YAML) to a Ray cluster."),
    "jobs": Command("cluster.commands:JobsConfig", "cluster.jobs:cmd_jobs", "Status, logs or stop of a submitted job."),
    "schedule add": Command("cluster.schedule_commands:ScheduleAddConfig", "cluster.schedule_commands:cmd_add",
                            "Add a schedule: a job file run --every 6h or on --cron, extracting what is new."),
    "schedule run": Command("cluster.schedule_commands:ScheduleRunConfig", "cluster.schedule_commands:cmd_run",
                            "Run one tick now: extract what is new since the last tick, then stop."),
    "schedule serve": Command("cluster.schedule_commands:ScheduleServeConfig", "cluster.schedule_commands:cmd_serve",
                              "Run due ticks of every schedule, forever (e.g. as a Ray job on the head node)."),
    "schedule list": Command("cluster.schedule_commands:ScheduleListConfig", "cluster.schedule_commands:cmd_list",
                             "List schedules: next due time and how the last tick ended."),
    "schedule history": Command("cluster.schedule_commands:ScheduleHistoryConfig",
                                "cluster.schedule_commands:cmd_history",
                                "A schedule's ticks: start, end, inputs found, units written, rows, errors."),
    "schedule remove": Command("cluster.schedule_commands:ScheduleRemoveConfig", "cluster.schedule_commands:cmd_remove",
                               "Remove a schedule and its history (its dataset is kept)."),
    "schedule export": Command("cluster.schedule_commands:ScheduleExportConfig", "cluster.schedule_commands:cmd_export",
                               "Print a KubeRay RayCronJob (--kuberay) or a CronJob (--cronjob) running the ticks."),
    "cluster up": Command("cluster.local:ClusterUpConfig", "cluster.local:cmd_up",
                          "Start a local multi-node Ray cluster on loopback (a head and workers, separate processes)."),
    "cluster down": Command("cluster.local:ClusterDirConfig", "cluster.local:cmd_down",
                            "Stop the local cluster: every process it started."),
    "cluster status": Command("cluster.local:ClusterDirConfig", "cluster.local:cmd_status",
                              "Addresses and live nodes of the local cluster."),
    **{name: Command(f"{a.module}:CONFIG", f"{a.module}:run", a.help, True) for name, a in ANALYSES.items()},
    "sae encode": Command("analysis.sae.config:SaeEncodeConfig", "cluster.dashboard_command:cmd_encode",
                          "Run a trained SAE over a dataset: sparse latents and top-activating examples "
                          "(--dashboard SITE: and its latent dashboard).", True),
    "sae dashboard": Command("analysis.sae.dashboard.run:SaeDashboardConfig", "cluster.dashboard_command:cmd_dashboard",
                             "A static site of an SAE's latents: sortable index, a page per latent with shaded "
                             "contexts or stimulus thumbnails and patch heat maps.", True),
    "sae explain": Command("analysis.interp.config:SaeExplainConfig", "analysis.interp.run:explain",
                           "Ask a language model (any OpenAI-compatible endpoint, or a local one) to explain each "
                           "selected latent from its top and quantile contexts; answers cached, asked once.", True),
    "sae score": Command("analysis.interp.config:SaeScoreConfig", "analysis.interp.run:score_run",
                         "Score a sae explain run's explanations on held-out contexts (delphi's detection and "
                         "fuzzing) beside a random-explanation baseline.", True),
    "sae eval": Command("cluster.sae_eval:SaeEvalConfig", "cluster.sae_eval:run",
                        "An SAE inside the model: next-token CE spliced vs clean vs zero-ablated (CE loss recovered), "
                        "KL, FVU, L0 on held-out contexts (Ray actors, three passes per batch); a model "
                        "without an LM head (an encoder) gets the final hidden states' cosine recovered instead.",
                        True),
    "generate": Command("cluster.generate:GenerateConfig", "cluster.generate:run",
                        "Continuations with and without --intervene side by side (steering demos): JSONL + "
                        "Markdown/HTML table, seeded."),
}


CLUSTER_GROUPS = {
    "schedule": "Scheduled extraction of growing inputs: add, run a tick, serve, list, history, remove, export.",
    "cluster": "A local multi-node Ray cluster on loopback, for trying jobs as they run on a real cluster.",
}


#: commands whose --out is the dataset they write (create, resume, --overwrite): it may be one, never lie in one
DATASET_OUTPUTS = frozenset({"extract", "import", "demo", "sae encode"})
#: output options: every command's --out (card's is a file with checks of its own), and sae encode's --dashboard
OUTPUT_OPTIONS = ("out", "dashboard")


def check_outputs(name: str, cfg) -> None:
    """Refuse an output inside a dataset (or, where the command writes no dataset, one that is a dataset) before
    the command creates anything: a lock, a checkpoint or a folder made first was left behind inside the dataset
    when the command refused the place later."""
    from shards.locations import check_output_place
    from shards.storage import Storage

    if name == "card":
        return
    for option in OUTPUT_OPTIONS:
        uri = getattr(cfg, option, None)
        if isinstance(uri, str) and uri:
            may_be_dataset = name in DATASET_OUTPUTS and option == "out"
            check_output_place(f"--{option}", Storage(uri, getattr(cfg, "storage", None)), may_be_dataset)


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def command_of(argv: list[str]) -> str | None:
    """The command named at the start of ``argv`` (``info``, ``sae train``), if any."""
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and f"{words[0]} {words[1]}" in COMMANDS:
        return f"{words[0]} {words[1]}"
    return words[0] if words and words[0] in COMMANDS else None


def build_parser(argv: list[str] | None = None) -> JobFileParser:
    """The parser; only the command ``argv`` names gets its flags (the others appear with their help)."""
    chosen = command_of(argv or [])
    dash = DashVariant.DASH
    parser = JobFileParser(prog="actlake", description="Activation datasets: extract, describe, verify, list; "
                           "train and apply SAEs; probe every hook.", add_option_string_dash_variants=dash)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict = {}
    for name, cmd in COMMANDS.items():
        target, leaf = sub, name
        if " " in name:  # "sae train": a sub-command of "sae"
            group, leaf = name.split(" ", 1)
            if group not in groups:
                gp = sub.add_parser(group, help={**GROUPS, **CLUSTER_GROUPS}.get(group, f"{group} commands"),
                                    add_option_string_dash_variants=dash)
                groups[group] = gp.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            target = groups[group]
        p = target.add_parser(leaf, help=cmd.help, description=cmd.help, add_option_string_dash_variants=dash,
                              **({"add_config_path_arg": "config"} if cmd.job_file else {}))
        p.section = leaf
        if name == chosen:
            p.add_arguments(_resolve(cmd.config), dest="cfg")
            _add_version_flags(p, _resolve(cmd.config))
    return parser


def _add_version_flags(p, config) -> None:
    """``--NAME-version N`` for each dataset input NAME of the command: the older spelling of ``--NAME URI@vN``."""
    from analysis.common.inputs import input_fields, version_flag

    for name in input_fields(config):
        flag = version_flag(name)
        p.add_argument("--" + flag.replace("_", "-"), dest=VERSION_DEST + flag, type=int, default=None,
                       metavar="N", help=f"Read version N of --{name.replace('_', '-')} (the same as URI@vN).")


VERSION_DEST = "pin_"  #: where argparse leaves the --NAME-version flags, until they pin the config's inputs


def _with_version_flags(args):
    """The parsed config with its ``--NAME-version N`` flags applied (``analysis.common.inputs.with_versions``)."""
    from analysis.common.inputs import with_versions

    flags = {k[len(VERSION_DEST):-len("_version")]: v for k, v in vars(args).items() if k.startswith(VERSION_DEST)}
    return with_versions(args.cfg, flags)


#: what quiets third-party libraries at the default verbosity (set before they are imported, and inherited by the
#: Ray workers this process starts): transformers' advisory warnings and progress bars, Hugging Face Hub bars, and
#: other libraries' own tqdm bars (GGUF de-quantisation); actlake's bars pass ``disable`` themselves, so stay
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


#: third-party loggers whose warnings a command at the default verbosity does not show
QUIET_LOGGERS = ("transformers", "torch", "datasets", "huggingface_hub", "ray", "sentence_transformers")


@contextlib.contextmanager
def _quiet_libraries(quiet: bool, restore: bool):
    """Third-party libraries quiet for the command: the environment set before any of them is imported (Hugging
    Face reads it once, at import; the processes this one starts inherit it), their warnings ignored and their
    loggers at ERROR. With ``restore``, put back afterwards, for a caller that runs ``main`` in its own process
    (tests); the ``actlake`` executable keeps them to the end (torch logs its compile statistics at exit)."""
    import warnings

    if not quiet:
        yield
        return
    if not restore:
        os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
        warnings.simplefilter("ignore")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        yield
        return
    added = {k: v for k, v in QUIET_ENV.items() if k not in os.environ}
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    os.environ.update(added)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation and config warnings; actlake reports by logging
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for k in added:
                os.environ.pop(k, None)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _setup_logging(verbose: bool) -> None:
    """actlake's own INFO lines; third-party banners, warnings and progress bars only with ``-v``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Only our loggers go to DEBUG: botocore's DEBUG output carries request signatures and tokens.
    logging.getLogger("actlake").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "aiobotocore", "s3fs", "urllib3", "fsspec", "httpx", "httpx2", "httpcore", "httpcore2",
                  "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None, *, restore: bool = True) -> int:
    """Run the command ``argv`` names; its exit code. ``restore``: put the quieted libraries back afterwards."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # quiet before the command's modules import transformers or datasets
    with _quiet_libraries(not {"-v", "--verbose"} & set(argv), restore):
        return _main(argv)


def _main(argv: list[str]) -> int:
    name = command_of(argv) or "actlake"
    try:
        args = build_parser(argv).parse_args(argv)  # configs check themselves while they are built
        _setup_logging(args.verbose)
        set_command_line(argv)  # for the manifest and the dataset card (secrets redacted)
        cfg = _with_version_flags(args)
        check_outputs(name, cfg)
        result = _resolve(COMMANDS[name].run)(cfg)
    except ActlakeError as exc:
        message = redact_message(str(exc), argv)  # it may echo what was typed (--storage-option 'secret:X')
        print(f"actlake {name}: error: {printable(message, keep_newlines=True)}", file=sys.stderr)  # text of files
        return 2
    if isinstance(result, int) and result:
        return result
    if not isinstance(result, int) and not sys.stdout.isatty():
        print(json.dumps(result.to_json()))  # the result for a script or a pipe; a terminal gets the line below
    _last_line(name, cfg, argv)
    return 0


def _last_line(name: str, cfg, argv: list[str]) -> None:
    """What the command wrote and what to run next, as the last line on the terminal."""
    from cluster.next_steps import final_line

    line = final_line(name, cfg)
    if line:
        sys.stdout.flush()
        # an object-store URI may carry what was typed (credentials); a local path is shown as it is
        remote = any("://" in word and not word.startswith("file://") for word in line.split())
        print(printable(redact_message(line, argv) if remote else line), file=sys.stderr)


def cli() -> None:
    """The ``actlake`` executable: ``main``, then exit with its code. A refused command (exit 2) leaves at once
    when no Ray runtime was started: tearing down the native libraries it loaded (torch, scikit-learn, arrow) has
    aborted the process ("terminate called without an active exception", exit 134) after the error was printed,
    in about 1 of 10 runs on these machines, so a script saw 134 instead of 2."""
    try:
        code = main(restore=False)
        sys.stdout.flush()  # a closed pipe shows here for output still buffered
    except BrokenPipeError:
        code = _reader_went_away()
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; what was committed or cached stays
        print(f"\nactlake {command_of(sys.argv[1:]) or ''}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        code = INTERRUPTED_EXIT
        sys.stderr.flush()
        _stop_local_ray()  # its agents would outlive a process that leaves without shutting it down
        os._exit(code)  # at once: threads still in a request (a model endpoint, a retry) are not waited for
    ray = sys.modules.get("ray")
    if code != 0 and not (ray is not None and ray.is_initialized()):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def _stop_local_ray(wait: float = 15.0) -> None:
    """``ray.shutdown()`` when this process started Ray, for at most ``wait`` seconds (a second Ctrl-C is no
    longer needed to leave)."""
    import threading

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    t = threading.Thread(target=ray.shutdown, daemon=True)
    t.start()
    t.join(wait)


#: the exit code of a command stopped by Ctrl-C: 128 + SIGINT, what a shell reports
INTERRUPTED_EXIT = 130
#: the exit code of a command whose reader closed its output early (``actlake versions DS | head``): 128 + SIGPIPE,
#: what a shell reports for a program the closed pipe ended
BROKEN_PIPE_EXIT = 141


def _reader_went_away() -> int:
    """Output went to a pipe whose reader left (``| head``): stop quietly. Standard output is pointed at the null
    device, so flushing what is still buffered at exit cannot raise a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process): nothing to redirect
        pass
    return BROKEN_PIPE_EXIT


if __name__ == "__main__":
    cli()
