"""The one exception type for bad input.

Anything a user can get wrong (a value, a file, a class index, a layer type) raises
`InputError` with a message that names the problem in one line. The CLI turns it into
that line on stderr and exit code 2; any other exception is an internal failure (exit 1).
"""


class InputError(ValueError):
    """Bad user input: the message is shown as-is, on one line."""
