"""Translations between OpenAI's chat format and each provider dialect: pure functions only.

What every dialect shares lives here: :class:`Untranslatable`, the answer of a request
translation that cannot express what the client asked for.
"""

from __future__ import annotations

import attrs

__all__ = ["Untranslatable"]


@attrs.frozen
class Untranslatable:
    """A request a dialect cannot serve as asked; ``param`` names the OpenAI field (OpenAI's
    ``param`` style: ``messages[2].content[0]``, ``tool_choice``).

    The shell skips to a provider that can serve the request, and answers 400 naming ``param``
    when none can.
    """

    param: str
    message: str
    code: str = "unsupported_parameter"
