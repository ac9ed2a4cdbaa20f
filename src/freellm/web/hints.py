"""What each provider's key looks like and where to get one: one line for the Keys page."""

from __future__ import annotations

from typing import Final

__all__ = ["KEY_HINTS", "hint_for"]

KEY_HINTS: Final[dict[str, tuple[str, str]]] = {
    "google": ("starts with AIza…", "https://aistudio.google.com/apikey"),
    "groq": ("starts with gsk_…", "https://console.groq.com/keys"),
    "cerebras": ("starts with csk-…", "https://cloud.cerebras.ai/"),
    "sambanova": ("a UUID-like token", "https://cloud.sambanova.ai/apis"),
    "nvidia": ("starts with nvapi-…", "https://build.nvidia.com/"),
    "mistral": ("32 letters and digits", "https://console.mistral.ai/api-keys"),
    "openrouter": ("starts with sk-or-v1-…", "https://openrouter.ai/keys"),
    "github": (
        "a GitHub token (github_pat_… or ghp_…) with the models scope",
        "https://github.com/settings/tokens",
    ),
    "huggingface": ("starts with hf_…", "https://huggingface.co/settings/tokens"),
    "cohere": ("a trial key, 40 letters and digits", "https://dashboard.cohere.com/api-keys"),
    "cloudflare": (
        "account_id:api_token (your account id, a colon, then a Workers AI token)",
        "https://dash.cloudflare.com/profile/api-tokens",
    ),
    "zhipu": ("id.secret, from the API keys page", "https://open.bigmodel.cn/usercenter/apikeys"),
    "moonshot": ("starts with sk-…", "https://platform.moonshot.ai/console/api-keys"),
    "minimax": ("a long JWT-like token", "https://platform.minimax.io/"),
}


def hint_for(provider: str) -> dict[str, str | None]:
    looks, where = KEY_HINTS.get(provider, ("the API key of your server, if it needs one", ""))
    return {"looks_like": looks, "url": where or None}
