"""`bgen`: the project's command line (`bgen --help`)."""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

from bgen_assets.config import ConfigError, project
from bgen_assets.experiments import load_experiment_specs
from bgen_assets.generators import load_generator_specs

console = Console(width=150)


def _runner():
    from dagster import DagsterInstance

    from bgen_assets.definitions import defs
    from bgen_assets.runs import Runner, prepare_dagster_home

    prepare_dagster_home(project())
    return Runner(project(), defs, DagsterInstance.get())


def summary(runner, scope: str) -> Table:
    table = Table(title=f"bgen warehouse ({project().warehouse_path}), scope {scope}")
    columns = ("dataset", "events", "users", "user-weeks", "synthetic table", "syn. events",
               "syn. user-weeks", "pass@1", "failed weeks")
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "synthetic table") else "right")
    for dataset in project().datasets:
        events, n_users, n_weeks = runner.warehouse.query(
            f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT (user_id, date_trunc('week', ts))) "
            f'FROM "{dataset}".events'
        ).iloc[0]
        for key in runner.synthetic_keys(dataset, None):
            name = key.path[1]
            if not runner.instance.get_materialized_partitions(key):
                continue  # a variant this scope does not build
            rows = runner.warehouse.query(f'SELECT count(*) FROM "{dataset}"."{name}"').iloc[0, 0]
            weeks, pass_at_1, failed = runner.warehouse.query(
                f"SELECT count(*), avg(CASE WHEN attempts > 0 THEN pass_at_1::INT END), "
                f"count(*) FILTER (WHERE status = 'failed') FROM \"{dataset}\".\"{name}_log\""
            ).iloc[0]
            table.add_row(dataset, f"{events:,}", f"{n_users:,}", f"{n_weeks:,}", name, f"{rows:,}", f"{int(weeks):,}",
                          "-" if pass_at_1 != pass_at_1 or pass_at_1 is None else f"{pass_at_1:.0%}", f"{int(failed):,}")
    return table


def cmd_demo(args) -> None:
    from dagster import AssetKey

    runner = _runner()
    started = time.perf_counter()
    console.print("[bold]Shared assets[/bold] (raw sources, seeds, SQL models, profiles, fitted generators)")
    rebuilt = runner.build_shared()
    console.print(f"  outdated and rebuilt with their downstream: {', '.join(k.to_user_string() for k in rebuilt) or 'none'}")
    scope = args.scope or project().scope
    for spec in load_generator_specs():
        for dataset in project().datasets:
            selection = spec.selection(scope, dataset, project().selection(dataset, scope))
            chosen = selection.users
            if chosen is None:
                chosen = runner.instance.get_dynamic_partitions(f"{dataset}_users")
            for user in chosen:
                began = time.perf_counter()
                done = runner.materialize_user(dataset, user, spec.name, selection.max_weeks_per_user)
                console.print(f"  {spec.name} {dataset} user {user}: " + ", ".join(f"{k} {v}" for k, v in done.items())
                              + f" ({time.perf_counter() - began:.0f} s)")
    console.print("[bold]Evaluation and training[/bold] (fidelity, privacy gate, predictors, result tables)")
    experiments = [spec for spec in load_experiment_specs() if spec.scoped(scope).build]
    for dataset in project().datasets:
        built = [spec.name for spec in load_generator_specs()
                 if runner.instance.get_materialized_partitions(AssetKey([dataset, f"synthetic_{spec.name}"]))]
        began = time.perf_counter()
        verdicts = runner.evaluate_generators(dataset, built)
        for generator, (passed, reason) in verdicts.items():
            if not passed:
                console.print(f"  {dataset}: [yellow]{generator} is not trained on[/yellow]: {reason}")
        usable = [generator for generator, (passed, _) in verdicts.items() if passed]
        trained = runner.train_experiments(dataset, experiments, usable)
        console.print(f"  {dataset}: evaluated {len(built)} generators, rebuilt "
                      f"{', '.join(k.to_user_string() for k in trained) or 'nothing'} ({time.perf_counter() - began:.0f} s)")
    console.print(summary(runner, scope))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")


def cmd_build(args) -> None:
    rebuilt = _runner().build_shared()
    console.print(f"rebuilt: {', '.join(k.to_user_string() for k in rebuilt) or 'nothing, all up to date'}")


def cmd_user(args) -> None:
    runner = _runner()
    done = runner.materialize_user(args.dataset, args.user, generator=args.generator, max_weeks=args.max_weeks)
    if not any(done.values()):
        console.print(f"{args.dataset} user {args.user}: everything up to date, nothing materialised")
    for key, count in done.items():
        console.print(f"{key}: {count} partition(s) materialised")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bgen", description="Synthetic behaviour data as a Dagster asset graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="build the shared assets and the scope's users, print row counts")
    demo.add_argument("--scope", default=None, help="declared scope (default: bgen_project.yml `scope`)")
    demo.set_defaults(run=cmd_demo)
    build = commands.add_parser("build", help="observe the source files and rebuild the stale or missing shared assets")
    build.set_defaults(run=cmd_build)
    user = commands.add_parser("user", help="materialise one user's partitions (all weeks), only what is stale or missing")
    user.add_argument("dataset")
    user.add_argument("user")
    user.add_argument("--generator", default=None, help="one generator declaration (default: those the scope builds)")
    user.add_argument("--max-weeks", type=int, default=None, help="only the user's first N weeks (default: all)")
    user.set_defaults(run=cmd_user)
    ui = commands.add_parser("ui", help="serve the Dagster UI (dagster dev) on the state directory's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(run=cmd_ui)
    home = commands.add_parser("home", help="prepare and print DAGSTER_HOME under the state directory")
    home.set_defaults(run=cmd_home)
    args = parser.parse_args(argv)
    try:
        args.run(args)
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
