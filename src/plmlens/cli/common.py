"""What every command shares: the typer app, the two consoles, one-line errors, the default data."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from plmlens.proteins.sources import shared_data_dir

app = typer.Typer(
    help="What protein language models learn: attention and hidden states against structure and function.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

console = Console(stderr=True)
out = Console()

SOURCE_HELP = (
    "A file, directory, glob, 'promod3', 'antibodies', or a dataset file, optionally followed by "
    "'::option=value,...' (see `plmlens proteins sources`)."
)
DEVICE_HELP = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ..."
DTYPE_HELP = "Model precision: auto (bfloat16 on GPUs that support it, else float32), float32, bfloat16, float16."


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def default_source() -> str:
    """The built-in default data: the shared antibody structures (variable domains, paratope as binding
    site), or the ProMod3 database where they are absent."""
    if (shared_data_dir() / "antibodies" / "MANIFEST.tsv").exists():
        return "antibodies::variable_domain"
    return "promod3::antibody,variable_domain"


def load_model_or_exit(model: str, device: str = "auto", dtype: str = "auto", *, random_init: bool = False,
                       init_seed: int = 0):  # fmt: skip
    """`plmlens.models.load_model` (random weights with ``--random-init``), or a one-line error and exit 2."""
    from plmlens.models import ModelLoadError, load_model

    try:
        return load_model(model, device=device, dtype=dtype, random_init=random_init, seed=init_seed)
    except ModelLoadError as error:
        raise fail(str(error)) from None
