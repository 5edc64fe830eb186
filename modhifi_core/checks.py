"""The input checks more than one operation (and the params schema) makes, each written once.

Every function raises `InputError` (a `ValueError`, so a pydantic validator may call it
and show its sentence) with one line, and returns nothing when the input is fine.
"""

from __future__ import annotations

from modhifi_core.errors import InputError


def check_fraction(name: str, value: object) -> None:
    """`value` is a number strictly between 0 and 1 (a target, a fraction to forget, a
    test split); `name` is how the user gave it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InputError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")


def check_one_given(**targets: object) -> str:
    """Exactly one of `targets` (keyword: how the user names it) is given (not None);
    returns its name."""
    given = [name for name, value in targets.items() if value is not None]
    if len(given) != 1:
        names = list(targets)
        raise InputError(f"give exactly one of {', '.join(names[:-1])} and {names[-1]}")
    return given[0]


def check_one_target(**targets: object) -> None:
    """Exactly one of `targets` is given (`check_one_given`) and it is a fraction
    (`check_fraction`)."""
    name = check_one_given(**targets)
    check_fraction(name, targets[name])


def check_class_exists(label: object, num_classes: int, what: str = "class") -> None:
    """`label` is one of the model's classes `0..num_classes - 1` (`what`: e.g. `forget class`)."""
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise InputError(f"{what} {label!r} does not exist: the model has classes 0..{num_classes - 1}")


def check_forget_set(forget_class: int | None, forget_random: float | None, data: str) -> None:
    """Exactly one forget set (a class, or a random fraction of the training samples); a
    random one names real samples, so the method must see real data (`data`)."""
    if (forget_class is None) == (forget_random is None):
        raise InputError(
            "give exactly one forget set: forget_class (--forget-class K) or forget_random (--forget-random F)"
        )
    if forget_random is not None:
        check_fraction("forget_random", forget_random)
        if data == "synthetic":
            raise InputError("random forgetting names real training samples: it needs data real (--forget-data real)")
