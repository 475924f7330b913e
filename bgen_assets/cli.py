"""`bgen`: the project's command line (`bgen --help`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from rich.console import Console
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text

from bgen_assets import names
from bgen_assets.config import ConfigError, project

console = Console(width=150)


STAGES = ("generate", "evaluate", "train", "report")


def _runner(scope: str | None = None, workers: int = 1):
    """A Runner over the project's instance, its definitions built for `scope` (training caps and
    code versions follow the scope, so one scope value decides everything a command builds)."""
    from dagster import DagsterInstance

    from bgen_assets.runs import Runner, prepare_dagster_home

    scoped = project().model_copy(update={"scope": scope or project().scope})
    if scoped.scope not in scoped.scopes:
        raise ConfigError(f"unknown scope {scoped.scope!r}; declared: {', '.join(scoped.scopes)}")
    prepare_dagster_home(scoped)
    return Runner.for_project(scoped, DagsterInstance.get(), workers=workers)


def summary(runner, datasets: list[str]) -> Table:
    table = Table(title=f"bgen warehouse ({runner.project.warehouse_path}), scope {runner.project.scope}")
    columns = ("dataset", "events", "users", "user-weeks", "synthetic table", "syn. events",
               "syn. user-weeks", "pass@1", "failed weeks")
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "synthetic table") else "right")
    for dataset in datasets:
        events, n_users, n_weeks = runner.warehouse.query(
            f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT (user_id, date_trunc('week', ts))) "
            f"FROM {names.sql_model(dataset, 'events').sql}"
        ).iloc[0]
        for generator in runner.generator_names(dataset):
            synthetic = names.synthetic(dataset, generator)
            if not runner.graph.has(synthetic.key) or not runner.instance.get_materialized_partitions(synthetic.key):
                continue  # a variant this scope does not build
            name = synthetic.name
            rows = runner.warehouse.query(f"SELECT count(*) FROM {synthetic.sql}").iloc[0, 0]
            weeks, pass_at_1, failed = runner.warehouse.query(
                f"SELECT count(*), avg(CASE WHEN attempts > 0 THEN pass_at_1::INT END), "
                f"count(*) FILTER (WHERE status = 'failed') FROM {names.synthetic_log(dataset, generator).sql}"
            ).iloc[0]
            table.add_row(dataset, f"{events:,}", f"{n_users:,}", f"{n_weeks:,}", name, f"{rows:,}", f"{int(weeks):,}",
                          "-" if pass_at_1 != pass_at_1 or pass_at_1 is None else f"{pass_at_1:.0%}", f"{int(failed):,}")
    return table


def stage_table(runner) -> Table:
    table = Table(title="stages")
    for column in ("stage", "wall s", "compute s", "runs", "units", "LLM calls", "cache hits"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in runner.stages:
        if stage.outcomes:
            table.add_row(stage.name, f"{stage.wall_s:.1f}", f"{stage.compute_s:.1f}", str(len(stage.outcomes)),
                          f"{stage.units:,}", f"{stage.llm_calls:,}", f"{stage.cache_hits:,}")
    return table


class ProgressBars:
    """A live bar per stage: done/total units (weeks, fits, predictors), rate and ETA; one for
    the training running now: its epochs (of at most max_epochs) and its latest validation loss;
    and one for the local LLM's current call: requests answered and decoding tokens/s."""

    def __init__(self, progress):
        self.progress, self.tasks = progress, {}
        self.llm_done = 0

    def __call__(self, stage: str, done: int, total: int, unit: str = "") -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, unit=unit)
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def report(self, topic: str, figures: dict) -> None:
        """The listener for `bgen_assets.progress` reports."""
        if topic == "epoch":
            self.epoch(figures)
        elif topic == "llm":
            self.llm(figures)

    def llm(self, figures: dict) -> None:
        rate = figures["tokens_per_s"]
        label = f"  {figures['model'][:30]} · " + (f"{rate:.0f} tokens/s" if rate else "reading prompts")
        if "llm" not in self.tasks:
            self.tasks["llm"] = self.progress.add_task(label, total=figures["total"], unit="requests")
        elif figures["done"] < self.llm_done:  # a new call: its own count, rate and ETA
            self.progress.reset(self.tasks["llm"], total=figures["total"])
        self.llm_done = figures["done"]
        self.progress.update(self.tasks["llm"], description=label, completed=figures["done"], total=figures["total"])

    def epoch(self, figures: dict) -> None:
        loss = figures.get("valid_loss", figures.get("train_loss"))
        kind = "valid" if "valid_loss" in figures else "train"
        label = f"  {figures['run'][:34]} · {kind} loss {loss:.3f}"
        if "epochs" not in self.tasks:
            self.tasks["epochs"] = self.progress.add_task(label, total=figures["max_epochs"], unit="epochs")
        self.progress.update(self.tasks["epochs"], description=label, completed=figures["epoch"],
                             total=figures["max_epochs"])


class RateColumn(ProgressColumn):
    """`12.3 weeks/s`, or `40 s/epoch` when slower than one per second."""

    def render(self, task) -> Text:
        if not task.speed:
            return Text("")
        unit = task.fields.get("unit", "")
        rate = f"{task.speed:.1f} {unit}/s" if task.speed >= 1 else f"{1 / task.speed:.0f} s/{unit.removesuffix('s')}"
        return Text(rate, style="progress.data.speed")


def run_scope(runner, datasets: list[str], generators: list[str] | None, experiments: list[str] | None,
              stages: tuple[str, ...]) -> None:
    """Build what the runner's scope declares for the datasets, only what is stale or missing."""
    from bgen_assets.experiments import load_experiment_specs
    from bgen_assets.generators import load_generator_specs

    scope = runner.project.scope
    if "generate" in stages:
        rebuilt = runner.build_shared(datasets)
        console.print(f"shared assets rebuilt: {', '.join(k.to_user_string() for k in rebuilt) or 'none, all up to date'}")
    experiment_specs = [spec for spec in load_experiment_specs(runner.catalog.models_dir / "experiments")
                        if (spec.scoped(scope).build if experiments is None else spec.name in experiments)]
    declared = {spec.name: spec for spec in load_generator_specs(runner.catalog.models_dir / "generators")}
    unknown = set(generators or ()) - set(declared)
    if unknown:
        raise ConfigError(f"unknown generator(s) {sorted(unknown)}; declared: {', '.join(declared)}")
    for dataset in datasets:
        built = runner.generator_names(dataset) if generators is None else generators  # named: built even on request
        if "generate" in stages:
            runner.check_shared_built(dataset, built)
            runner.fit_generators(dataset, built)
            selection = runner.project.selection(dataset)
            runner.build_segments(dataset, selection.users)
            for name in built:
                chosen = declared[name].selection(scope, dataset, selection)
                if chosen.users == [] and generators is not None:
                    chosen = selection  # named on the command line: the scope's users
                generated = runner.generate(dataset, name, chosen.users, chosen.max_weeks_per_user)
                console.print(f"{names.synthetic(dataset, name).key.to_user_string()}: {generated:,} user-week(s) generated")
        usable, mark = built, len(runner.stages)
        if "evaluate" in stages or "train" in stages:
            verdicts = runner.evaluate_generators(dataset, built)
            for generator, (passed, reason) in verdicts.items():
                if not passed:
                    console.print(f"{dataset}: [yellow]{generator} is not trained on[/yellow]: {reason}")
            usable = [generator for generator, (passed, _) in verdicts.items() if passed]
        if "train" in stages:
            runner.train_experiments(dataset, experiment_specs, usable)
        if "report" in stages:
            runner.build_summaries(dataset)
        rebuilt = [key.to_user_string() for stage in runner.stages[mark:] for outcome in stage.outcomes
                   for key in outcome.request.keys]
        console.print(f"{dataset}: evaluated {len(built)} generators, rebuilt {', '.join(rebuilt) or 'nothing'}")


def cmd_run(args) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bgen_assets.progress import listen

    runner = _runner(args.scope, args.workers)
    datasets = runner.project.scope_datasets() if args.dataset is None else args.dataset
    unknown = set(datasets) - set(runner.project.datasets)
    if unknown:
        raise ConfigError(f"unknown dataset(s) {sorted(unknown)}; declared: {', '.join(runner.project.datasets)}")
    stages = STAGES if args.stage is None else STAGES[: STAGES.index(args.stage) + 1] if args.through else (args.stage,)
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    runner.start_workers()  # they start up while the shared assets are checked
    stopped = True
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            runner.on_progress = bars = ProgressBars(progress)
            listen(bars.report)
            run_scope(runner, datasets, args.generator, args.experiment, stages)
        stopped = False
    finally:  # stopped or failed too: what each stage did so far
        listen(None)
        runner.close(stopped)
        console.print(stage_table(runner))
    console.print(summary(runner, datasets))
    console.print(f"finished in {time.perf_counter() - started:.0f} s")


def cmd_demo(args) -> None:
    args.scope = args.scope or "demo"
    cmd_run(args)


def cmd_build(args) -> None:
    rebuilt = _runner().build_shared()
    console.print(f"rebuilt: {', '.join(k.to_user_string() for k in rebuilt) or 'nothing, all up to date'}")


def cmd_user(args) -> None:
    from bgen_assets.up_to_date import UpToDate, fingerprint

    scoped = project().model_copy(update={"scope": args.scope or project().scope})
    command = ["user", args.dataset, args.user, args.generator, args.max_weeks, scoped.scope]
    last_answer = UpToDate(scoped, command)
    answer = last_answer.answer()  # nothing it depends on changed since it found nothing to do: no need to load Dagster
    if answer is None:
        before = fingerprint(scoped, command)
        runner = _runner(args.scope, args.workers)
        try:
            done = runner.materialize_user(args.dataset, args.user, generator=args.generator, max_weeks=args.max_weeks)
            answer = {"done": done, "unconditioned": runner.why_no_synthetic_weeks(args.dataset, args.user)}
        finally:
            runner.close()
        if not any(done.values()):
            last_answer.store(before, answer)
    done = answer["done"]
    if not any(done.values()):
        console.print(f"{args.dataset} user {args.user}: everything up to date, nothing materialised")
    for key, count in done.items():
        console.print(f"{key}: {count} partition(s) materialised")
    if answer["unconditioned"]:
        console.print(f"[yellow]{args.dataset} user {args.user} has no synthetic week[/yellow]: {answer['unconditioned']}")


def cmd_home(args) -> None:
    from bgen_assets.runs import prepare_dagster_home

    print(prepare_dagster_home(project()))


def cmd_ui(args) -> None:
    """Replace this process by `dagster dev` with default SIGINT/SIGTERM handling: started from a
    non-interactive shell it would inherit an ignored SIGINT and then ignore SIGTERM too."""
    import os
    import shutil
    import signal

    from bgen_assets.config import PROJECT_ROOT
    from bgen_assets.runs import prepare_dagster_home

    prepare_dagster_home(project())
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable)) or "dagster"
    os.chdir(PROJECT_ROOT)
    os.execv(dagster, [dagster, "dev", "-h", args.host, "-p", str(args.port), "-w", "workspace.yaml"])


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgen", description="Synthetic behaviour data as a Dagster asset graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "build what a scope declares: generate, evaluate, train, report (only what is stale)"),
                            ("demo", "`bgen run` over the demo scope")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--scope", default=None, help="declared scope (default: bgen_project.yml `scope`"
                             + (", for demo: demo)" if name == "demo" else ")"))
        command.add_argument("--dataset", action="append", default=None, help="only this dataset (repeatable)")
        command.add_argument("--generator", action="append", default=None, help="only this generator (repeatable)")
        command.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
        command.add_argument("--stage", choices=STAGES, default=None, help="only this stage (default: all)")
        command.add_argument("--through", action="store_true", help="with --stage: every stage up to it")
        command.add_argument("--workers", type=int, default=1, help="processes running independent work side by side")
        command.set_defaults(run=cmd_demo if name == "demo" else cmd_run)
    build = commands.add_parser("build", help="observe the source files and rebuild the stale or missing shared assets")
    build.set_defaults(run=cmd_build)
    user = commands.add_parser("user", help="materialise one user's partitions the scope declares, only what is stale or missing")
    user.add_argument("dataset")
    user.add_argument("user")
    user.add_argument("--generator", default=None, help="one generator declaration (default: those the scope builds)")
    user.add_argument("--max-weeks", type=int, default=None, help="only the user's first N weeks (default: all)")
    user.add_argument("--scope", default=None, help="declared scope (default: bgen_project.yml `scope`)")
    user.add_argument("--workers", type=int, default=1, help="processes running independent work side by side")
    user.set_defaults(run=cmd_user)
    ui = commands.add_parser("ui", help="serve the Dagster UI (dagster dev) on the state directory's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(run=cmd_ui)
    home = commands.add_parser("home", help="prepare and print DAGSTER_HOME under the state directory")
    home.set_defaults(run=cmd_home)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_parser().parse_args(argv)
    # Both signals stop the command. SIGINT too: Dagster maps SIGTERM to SIGINT's handler after each
    # in-process run, so a SIGINT ignored by a non-interactive parent would make SIGTERM ignored as well.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        args.run(args)
    except KeyboardInterrupt:
        console.print("[yellow]stopped[/yellow]: what completed is kept; no partition was half-written")
        return 130
    except ConfigError as error:
        console.print(f"[red]configuration error[/red]: {error}")
        return 2
    except Exception as error:
        from bgen_assets.runs import RunFailed

        if not isinstance(error, RunFailed):
            raise
        console.print(f"[red]failed[/red]: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
