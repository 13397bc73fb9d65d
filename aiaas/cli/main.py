"""The `aiaas` entry point."""

from __future__ import annotations

import typer

from aiaas.cli import admin, models_versions
from aiaas.cli.batch import batch_app
from aiaas.cli.db import db_app
from aiaas.cli.deployments import create as deploy
from aiaas.cli.deployments import deployments_app
from aiaas.cli.keys import keys_app
from aiaas.cli.quickstart import quickstart
from aiaas.cli.secrets import secrets_app
from aiaas.cli.serve import serve, worker
from aiaas.cli.usage import usage
from aiaas.cli.workflow import files_app, jobs_app, models_app, predict
from aiaas.core.logging import configure_logging

app = typer.Typer(
    help="aiaas: fine-tune BERT-family models on your labelled data and serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("init")(admin.init)
app.command("serve")(serve)
app.command("worker")(worker)
app.command("ray-dispatcher")(admin.ray_dispatcher)
app.command("quickstart")(quickstart)
app.add_typer(admin.orgs_app, name="orgs")
app.add_typer(secrets_app, name="secrets")
app.add_typer(keys_app, name="keys")
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")
app.command("deploy", help="Alias of `aiaas deployments create`.")(deploy)
app.command("predict")(predict)
app.command("usage")(usage)
# versions, aliases and download join `models`; update, rollback and revisions join `deployments`
models_versions.attach(models_app, deployments_app)


@app.callback()
def main(log_level: str = typer.Option("WARNING", "--log-level", envvar="AIAAS_LOG_LEVEL")) -> None:
    configure_logging(log_level)


if __name__ == "__main__":
    app()
