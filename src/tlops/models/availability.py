"""Whether a backbone can be built on this machine, checked before any step runs.

Its architecture exists in the library's registry, and its pretrained weights are in the local cache or can be
downloaded. No weights are loaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from urllib.parse import urlparse

from tlops.errors import TlopsError
from tlops.io.storage import is_s3_uri
from tlops.models.names import split_backbone_name

HUB_TIMEOUT_S = 3.0


def check_backbone_available(name: str, timeout: float = HUB_TIMEOUT_S) -> None:
    """Check a well-formed backbone name (see :func:`~tlops.models.names.check_backbone_name`) against this machine.

    - ``timm:NAME`` / ``torchvision:NAME``: the architecture is in ``timm.list_models`` (pretrained tags too) /
      ``torchvision.models.list_models``.
    - Without ``@weights``: the pretrained weights are in the local Hugging Face cache (timm) or torch hub cache
      (torchvision and timm's URL weights), or the hub answers, so they can be downloaded.
    - ``@/local/path``: the file exists (``@s3://`` is checked when it is read).

    Bundled and ``hub:`` backbones are not checked here.

    Raises:
        TlopsError: naming the backbone, the problem and the fix.
    """
    family, arch, weights = split_backbone_name(name)
    if family not in ("timm", "torchvision"):
        return
    if family == "timm":
        import timm

        if not timm.is_model(arch):  # accepts pretrained tags (resnet18.a1_in1k), which list_models() omits
            raise TlopsError(f"{name}: timm has no model {arch!r}{_close(arch, timm.list_models())}")
    else:
        from torchvision import models

        if arch not in models.list_models():
            raise TlopsError(f"{name}: torchvision has no model {arch!r}{_close(arch, models.list_models())}")
    if weights:
        if not is_s3_uri(weights) and not Path(weights).is_file():
            raise TlopsError(f"{name}: the weights file {weights!r} does not exist; give a local path or an s3:// URI")
        return
    if family == "timm":
        _check_timm_weights(name, arch, timeout)
    else:
        _check_torchvision_weights(name, arch, timeout)


def _close(arch: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(arch, known, n=3)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _check_timm_weights(name: str, arch: str, timeout: float) -> None:
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise TlopsError(
            f"{name}: timm has no pretrained weights for {arch!r}; pick a pretrained model "
            f"(timm.list_models(pretrained=True)) or pass {name}@/path/weights.safetensors"
        )
    if cfg.file and Path(cfg.file).is_file():
        return
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in filenames):
            return
    if cfg.url and _in_torch_hub_cache(cfg.url):
        return
    endpoint = constants.ENDPOINT if cfg.hf_hub_id else cfg.url
    if not constants.HF_HUB_OFFLINE and _answers(endpoint, timeout):
        return
    raise TlopsError(
        f"{name}: its pretrained weights are not in the local Hugging Face cache and the hub cannot be reached; "
        f"download them first or pass {name}@/path/weights.safetensors"
    )


def _check_torchvision_weights(name: str, arch: str, timeout: float) -> None:
    from torchvision import models

    url = models.get_model_weights(arch).DEFAULT.url
    if _in_torch_hub_cache(url) or _answers(url, timeout):
        return
    raise TlopsError(
        f"{name}: its pretrained weights are not in the local torch hub cache and {urlparse(url).netloc} cannot be "
        f"reached; download them first or pass {name}@/path/weights.pth"
    )


def _in_torch_hub_cache(url: str) -> bool:
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()


def _answers(url: str, timeout: float) -> bool:
    """Whether the host of ``url`` answers an HTTP request at all (any status)."""
    import requests

    parsed = urlparse(url)
    try:
        requests.head(f"{parsed.scheme}://{parsed.netloc}/", timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True
