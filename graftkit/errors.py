"""The one exception type for user mistakes: the CLI prints its message as one line and exits non-zero.

It subclasses ValueError so library callers can catch bad input the usual way.
"""


class GraftkitError(ValueError):
    """A problem with the user's input (a path, a config value, data): the message names it."""
