"""The service's command line: ``serve``, ``worker``, ``keys``, ``credits``, ``account``,
``db``; ``register(app)`` adds them to the Typer app of ``lipdub.cli``.

Layer: the top of the service; it may import every service package (lazily, inside the
commands, so ``lipdub --help`` stays fast).
"""

from lipdub.service.cli.commands import register

__all__ = ["register"]
