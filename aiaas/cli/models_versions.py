"""CLI for versions, aliases, rollouts and download:

    aiaas models versions support
    aiaas models alias set support production 3
    aiaas models register support --checkpoint ftckpt-…
    aiaas deployments update support --canary support/4=10
    aiaas deployments rollback support
    aiaas deployments update support --log-sample-rate 0.05 --log-retention-days 7
    aiaas models download ft:… --format hf -o ./model

`attach(models_app, deployments_app)` adds the commands to the `models` and `deployments` groups."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import typer

from aiaas.cli.common import (
    ApiKeyOpt,
    BaseUrlOpt,
    console,
    err_console,
    handle_errors,
    print_json,
    sdk_client,
)

alias_app = typer.Typer(help="Aliases: a name (production, staging) that points at one version.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments: update, canary, roll back.", no_args_is_help=True)


@handle_errors
def versions(name: str = typer.Argument(..., help="Registered model name."),
             base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List a registered model's versions, newest first, with aliases and metrics."""
    with sdk_client(base_url, api_key) as c:
        for v in c.registered_models.versions(name)["data"]:
            aliases = ",".join(v["aliases"]) or "-"
            metrics = " ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items())
                               if isinstance(val, int | float))
            console.print(f"{v['name']:<24} {aliases:<20} {v['model']}  {metrics}")


@handle_errors
def register(name: str = typer.Argument(..., help="Registered model name (created on first use)."),
             checkpoint: str = typer.Option(..., "--checkpoint", help="A job checkpoint's id (ftckpt-…)."),
             base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Register a kept checkpoint of a succeeded job as the next version of NAME."""
    with sdk_client(base_url, api_key) as c:
        v = c.registered_models.register_checkpoint(name, checkpoint)
    console.print(f"{v['name']} {v['model']} (checkpoint {checkpoint}, step {v['lineage'].get('step')})")


@alias_app.command("set")
@handle_errors
def alias_set(name: str, alias: str, version: int, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Point NAME@ALIAS at VERSION (deployments following the alias move with it)."""
    with sdk_client(base_url, api_key) as c:
        r = c.registered_models.set_alias(name, alias, version)
    was = f" (was {r['previous_version']})" if r.get("previous_version") else ""
    console.print(f"{name}@{alias} -> {version}{was}")


@alias_app.command("delete")
@handle_errors
def alias_delete(name: str, alias: str, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    with sdk_client(base_url, api_key) as c:
        c.registered_models.delete_alias(name, alias)
    console.print(f"deleted {name}@{alias}")


@handle_errors
def download(model: str = typer.Argument(..., help="ft:… id, name/N or name@alias."),
             fmt: str = typer.Option("hf", "--format", help="hf (transformers) or onnx."),
             out: Path = typer.Option(..., "-o", "--output", help="Directory to unpack into."),
             archive: str = typer.Option("tar.gz", "--archive", help="tar.gz or zip (as transferred)."),
             base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Download a model and unpack it into OUT (the archive's top folder's files land in OUT)."""
    with sdk_client(base_url, api_key) as c:
        data = c.registered_models.download(model, format=fmt, archive=archive)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".download"
    if archive == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unsafe = [n for n in z.namelist() if n.startswith("/") or ".." in Path(n).parts]
            if unsafe:
                raise typer.BadParameter(f"the archive has members outside its folder: {unsafe[:3]}")
            z.extractall(tmp)  # nosec B202 - members checked just above (no absolute paths, no '..')
    else:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            t.extractall(tmp, filter="data")
    (top,) = list(tmp.iterdir())
    for p in top.iterdir():
        p.replace(out / p.name)
    top.rmdir()
    tmp.rmdir()
    console.print(f"{model} ({fmt}) -> {out}")


@deployments_app.command("update")
@handle_errors
def update(name: str,
           model: str = typer.Option(None, "--model", help="Send all traffic to this model (ft:…, name/N, name@alias)."),
           canary: str = typer.Option(None, "--canary", help="MODEL=PERCENT: that share to MODEL, the rest to the "
                                                             "deployment's main model."),
           sticky_header: str = typer.Option(None, "--sticky-header", help="Request header that pins a caller."),
           max_replicas: int = typer.Option(None, "--max-replicas",
                                            help="At most this many inference threads (Ray: replicas) at once."),
           log_sample_rate: float = typer.Option(None, "--log-sample-rate", min=0.0, max=1.0,
                                                 help="Keep this share of requests (0 turns sampling off); "
                                                      "`aiaas deployments logs export` makes them a file."),
           log_retention_days: int = typer.Option(None, "--log-retention-days", min=1, max=3650,
                                                  help="Days the sampled requests are kept."),
           base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Change a deployment without downtime (the new model is loaded before traffic moves), or its sampled
    request logging."""
    logging_only = log_sample_rate is not None or log_retention_days is not None
    if model is not None and canary is not None or (model is None and canary is None and max_replicas is None
                                                     and sticky_header is None and not logging_only):
        err_console.print("[red]error[/red] give one of --model and --canary, or only --max-replicas/--sticky-header"
                          "/--log-sample-rate/--log-retention-days")
        raise typer.Exit(2)
    with sdk_client(base_url, api_key) as c:
        if logging_only:  # its own PATCH: not a revision, traffic unchanged
            _update_request_logging(c, name, log_sample_rate, log_retention_days)
            if model is None and canary is None and max_replicas is None and sticky_header is None:
                return
        traffic = None
        if canary is not None:
            ref, _, pct = canary.rpartition("=")
            if not ref or not pct.isdigit() or not 0 < int(pct) < 100:
                err_console.print("[red]error[/red] --canary takes MODEL=PERCENT with 0 < PERCENT < 100")
                raise typer.Exit(2)
            current = c.deployments.retrieve(name)
            main = max(current["traffic"], key=lambda e: e["weight"])["model"]
            traffic = [{"model": main, "weight": 100 - int(pct)}, {"model": ref, "weight": int(pct)}]
        dep = c.registered_models.update_deployment(name, model=model, traffic=traffic, sticky_header=sticky_header,
                                                    max_replicas=max_replicas)
    _show(dep)


@deployments_app.command("rollback")
@handle_errors
def rollback(name: str, revision: int = typer.Option(None, "--revision", help="Default: the previous one."),
             base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Return a deployment to its previous revision (or --revision N), as a new revision."""
    with sdk_client(base_url, api_key) as c:
        _show(c.registered_models.rollback_deployment(name, revision=revision))


@deployments_app.command("revisions")
@handle_errors
def revisions(name: str, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    with sdk_client(base_url, api_key) as c:
        print_json(c.registered_models.deployment_revisions(name)["data"])


def _update_request_logging(c: Any, name: str, rate: float | None, days: int | None) -> None:
    """PATCH `request_logging`; the value not given stays as it is (the API would reset it)."""
    if rate is None or days is None:
        current = c.deployments.retrieve(name).request_logging or {}
        rate = current.get("sample_rate", 0.0) if rate is None else rate
        days = current.get("retention_days") if days is None else days
    dep = c.deployments.update_request_logging(name, sample_rate=rate, retention_days=days)
    kept = dep.request_logging or {}
    state = "off" if not kept.get("sample_rate") else f"{kept['sample_rate']:g} of requests sampled"
    console.print(f"{dep.name} request logging: {state}, kept {kept.get('retention_days')} days")


def _show(dep: dict) -> None:
    split = ", ".join(f"{e['model']}={e['weight']}%" for e in dep["traffic"])
    bound = f" (max_replicas {dep['max_replicas']})" if dep.get("max_replicas") else ""
    console.print(f"{dep['name']} revision {dep['revision']}: {split}{bound}")


def attach(models_app: typer.Typer, deployments: typer.Typer | None = None) -> typer.Typer:
    """Add these commands to the `models` group and to a `deployments` group (this module's own when
    none is given); returns the deployments group."""
    models_app.command("versions")(versions)
    models_app.command("download")(download)
    models_app.command("register")(register)
    models_app.add_typer(alias_app, name="alias")
    if deployments is not None:
        for cmd in deployments_app.registered_commands:
            deployments.registered_commands.append(cmd)
        return deployments
    return deployments_app
