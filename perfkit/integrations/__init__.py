"""Trainer callbacks that record perfkit runs without rewriting the training loop:
:mod:`perfkit.integrations.lightning` (extra ``lightning``) and
:mod:`perfkit.integrations.transformers` (extra ``transformers``). Each module imports its
library only when imported itself."""
