"""The Probe interface, the probe registry and ``resolve_probes``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeVar

from perfkit.checks import wrong_type
from perfkit.probes._sample import DeviceSample


class Probe:
    """Reads memory, utilisation, power and temperature of some devices.

    Life cycle: ``is_available()`` (cheap: no hardware initialisation, no subprocess),
    ``open()`` once, ``sample()`` any number of times, ``close()`` once, all from one thread;
    ``interrupt()`` may come from another thread at any time. ``open`` and ``sample`` raise on
    failure (the :class:`~perfkit.probes.Sampler` records the error and disables the probe); a
    single quantity a device cannot report is NaN in the sample, not an exception.
    """

    name: ClassVar[str]
    #: "device" probes read accelerators, "allocator" this process's torch allocator, "host"
    #: the machine; ``resolve_probes("auto")`` picks one device probe.
    kind: ClassVar[str] = "device"

    def is_available(self) -> bool:
        """Whether this machine seems to have what the probe reads (cheap, no hardware init)."""
        raise NotImplementedError

    def set_interval(self, interval_s: float) -> None:
        """Hint: ``sample()`` will be called about every ``interval_s`` seconds. Probes backed
        by a tool that loops by itself use it; the others ignore it."""

    def open(self) -> None:
        """Acquire what sampling needs (library handles, a long-lived tool process)."""

    def sample(self) -> list[DeviceSample]:
        """One reading per device."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``open`` acquired; safe to call more than once."""

    def interrupt(self) -> None:
        """Called from another thread when sampling stops while ``open`` or ``sample`` is
        still running: make it return (or raise) soon, e.g. by killing the tool it waits for.
        Later calls may fail at once. The default does nothing (the call is waited for, then
        abandoned)."""


P = TypeVar("P", bound=type[Probe])

_REGISTRY: dict[str, type[Probe]] = {}


def register_probe(cls: P) -> P:
    """Class decorator: make ``cls`` (constructible with no arguments) known by ``cls.name``.

    Raises ValueError when a probe of that name is already registered. ``"auto"`` tries NVML
    first, then the other device probes in registration order.
    """
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"duplicate probe name {name!r}: already registered by {_REGISTRY[name]}")
    _REGISTRY[name] = cls
    return cls


def registered_probes() -> list[str]:
    """Names of every registered probe, in registration order."""
    return list(_REGISTRY)


def available_probes() -> list[str]:
    """Names of the registered probes whose ``is_available()`` is true on this machine."""
    return [name for name, cls in _REGISTRY.items() if cls().is_available()]


def resolve_probes(spec: str | Sequence[str | Probe] | None) -> list[Probe]:
    """The probes ``spec`` asks for, not yet opened.

    ``"auto"``: NVML if available, else the first available vendor-tool probe; plus the torch
    allocator probe when torch is imported and sees an accelerator; plus the host probe.
    ``None``, ``"none"`` or an empty sequence: no probes. A name, or a sequence of names and
    :class:`Probe` instances: those probes. Raises ValueError (naming ``probes``) for an
    unknown name, a named probe this machine does not have, or the same probe twice.
    """
    if spec is None or spec == "none":
        return []
    if spec == "auto":
        return _auto()
    items: Sequence[str | Probe] = [spec] if isinstance(spec, str) else spec
    probes: list[Probe] = []
    for item in items:
        if isinstance(item, Probe):
            probes.append(item)
            continue
        if not isinstance(item, str):
            raise wrong_type("probes", "probe names, Probe instances, 'auto' or 'none'", item)
        if item not in _REGISTRY:
            raise ValueError(
                f"probes: unknown probe {item!r}; known probes: {', '.join(_REGISTRY)} "
                "(or 'auto' / 'none')"
            )
        probe = _REGISTRY[item]()
        if not probe.is_available():
            raise ValueError(
                f"probes: probe {item!r} is not available on this machine; available here: "
                f"{', '.join(available_probes()) or 'none'}"
            )
        probes.append(probe)
    names = [p.name for p in probes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"probes: probe(s) {', '.join(duplicates)} given more than once")
    return probes


def _auto() -> list[Probe]:
    candidates = [cls() for cls in _REGISTRY.values()]
    # NVML first (a library call, no process), then the tools in registration order.
    devices = sorted((p for p in candidates if p.kind == "device"), key=lambda p: p.name != "nvml")
    chosen: list[Probe] = []
    device = next((p for p in devices if p.is_available()), None)
    if device is not None:
        chosen.append(device)
    chosen += [p for p in candidates if p.kind in ("allocator", "host") and p.is_available()]
    return chosen
