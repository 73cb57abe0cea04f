"""The one exception type that carries a user-facing problem and its fix."""


class TlopsError(Exception):
    """A problem with the user's input or environment.

    The message names the problem and says how to fix it, in one line. The CLI prints it to stderr and exits
    with status 2, without a traceback.
    """
