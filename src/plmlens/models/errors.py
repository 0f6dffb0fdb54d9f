"""Exceptions raised by :mod:`plmlens.models`, each with a one-line message fit for a command line."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded: unreachable hub, missing wheel, corrupt or mismatched checkpoint.

    The message is a single line naming the model and saying what to do, so that a command line can print
    it without a traceback.
    """


class SequenceError(ValueError):
    """A protein sequence that a model cannot take (empty, or characters outside its alphabet).

    The message names the protein id.
    """


class HookUnavailableError(ValueError):
    """A hook point the model has no module for (e.g. ``blocks.{l}.attn.head_out`` on XLNet, which mixes
    heads inside its attention, or on an architecture whose head projection is not known).

    The message is a single line naming the model and the hook point.
    """
