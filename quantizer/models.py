"""Model loading: short names, JSON model cards, local weights, and the support check.

A MODEL argument is either a short name mapped to a pinned timm tag (`vit_b`, `deit_s`, ...)
or the path of a JSON model card (the format of shared/models/*.json). Everything that is
not a standard timm `VisionTransformer` is refused with a message that says why.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .card import SUPPORTED_ARCHITECTURE, check_card  # noqa: F401 - SUPPORTED_ARCHITECTURE re-exported
from .data import Preprocess
from .errors import P2VitError
from .outputs import WEIGHTS_FILE, sha256_of_file

# Short names -> pinned timm tags. vit_b is the 84.53% model the P²-ViT paper uses.
MODEL_TAGS = {
    "vit_t": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "vit_s": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_b": "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "vit_l": "vit_large_patch16_224.augreg_in21k_ft_in1k",
    "deit_t": "deit_tiny_patch16_224.fb_in1k",
    "deit_s": "deit_small_patch16_224.fb_in1k",
    "deit_b": "deit_base_patch16_224.fb_in1k",
}

@dataclass
class LoadedModel:
    """A float timm ViT ready for calibration, with what the rest of the flow needs to know."""

    name: str                      # short name or card name
    model: nn.Module               # eval mode, float32
    preprocess: Preprocess
    class_names: list[str] | None
    source: str                    # where the weights came from, for reports
    spec: dict = field(default_factory=dict)  # how to rebuild: {"kind": "timm"|"card", ...}
    weights_sha256: str | None = None  # of the weights file as it was loaded (None: no file)


def known_models_text() -> str:
    return ", ".join(MODEL_TAGS)


def load_model(spec: str, weights: str | os.PathLike | None = None,
               random_init: bool = False) -> LoadedModel:
    """Load MODEL (short name or card path). Exactly one weight source is used:
    --random-init, else --weights, else the card's weights file, else timm's pretrained download."""
    spec = str(spec)
    if weights is not None and random_init:
        raise P2VitError("--weights and --random-init exclude each other; pass one of them")
    if spec in MODEL_TAGS:
        return _load_named(spec, weights, random_init)
    if spec.endswith(".json") or os.path.sep in spec or Path(spec).is_file():
        return _load_card(Path(spec), weights, random_init)
    raise P2VitError(f"unknown model '{spec}': use one of {known_models_text()}, "
                     "or the path of a JSON model card")


@contextlib.contextmanager
def seeded(seed: int):
    """torch's global generator at `seed` inside (timm initializes weights from it), and as it was
    outside: loading a model, e.g. in cosim.run, leaves the caller's random stream alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load_named(name: str, weights, random_init: bool) -> LoadedModel:
    import timm

    tag = MODEL_TAGS[name]
    arch = tag.split(".")[0]
    if random_init or weights is not None:
        with seeded(0):   # random-init runs are reproducible
            model = timm.create_model(arch, pretrained=False)
        source, sha = "random-init (seed 0)", None
        if weights is not None:
            _load_weights_into(model, Path(weights), name)
            source = f"{WEIGHTS_FILE}{os.path.abspath(weights)}"   # absolute: cosim reloads it from anywhere
            sha = sha256_of_file(weights)
    else:
        model = _download_pretrained(name, tag)
        source, sha = f"timm pretrained {tag}", None
    check_supported(model, name)
    cfg = timm.data.resolve_data_config({}, model=model)
    classes = None
    return LoadedModel(name=name, model=model.eval(), preprocess=Preprocess.from_timm_config(cfg),
                       class_names=classes, source=source,
                       spec={"kind": "timm", "name": name, "tag": tag}, weights_sha256=sha)


def _network_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download_pretrained(name: str, tag: str) -> nn.Module:
    import timm

    offline_hint = (f"pass --weights FILE (a state dict or .safetensors of {tag}) "
                    "or --random-init for a structure-only run")
    if not _network_reachable():
        cached = _cached_weights(tag)
        if cached is None:
            raise P2VitError(f"cannot get pretrained weights for {name} (no network access and not in "
                             f"the local hub cache); {offline_hint}")
        return timm.create_model(tag, pretrained=True, pretrained_cfg_overlay={"file": cached})
    try:
        return timm.create_model(tag, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means the same to the user
        raise P2VitError(f"cannot get pretrained weights for {name} (download failed: "
                         f"{type(exc).__name__}); {offline_hint}") from None


def _cached_weights(tag: str) -> str | None:
    """Path of the timm weights in the local Hugging Face cache, if a previous run fetched them."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    repo = timm.models.get_pretrained_cfg(tag).hf_hub_id
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def _load_card(path: Path, weights, random_init: bool) -> LoadedModel:
    from timm.models.vision_transformer import VisionTransformer

    if path.is_dir():
        if (path / "manifest.json").is_file() or (path / "build.json").is_file():
            what = "a build" if (path / "build.json").is_file() else "a saved IR (python -m quantizer's output)"
            raise P2VitError(f"{path} is {what}, not a model: give the model's name or JSON card (the one it was "
                             f"made from), or one of {known_models_text()}")
        raise P2VitError(f"model card {path} is a directory; give the JSON model card in it, or one of "
                         f"{known_models_text()}")
    if not path.is_file():
        raise P2VitError(f"model card {path} does not exist; use one of {known_models_text()} "
                         "or the path of a JSON model card")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise P2VitError(f"model card {path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                         "fix or regenerate the card") from None
    except RecursionError:
        raise P2VitError(f"model card {path} is not valid JSON for p2vit (nested too deeply); "
                         "fix or regenerate the card") from None
    except OSError as exc:
        raise P2VitError(f"model card {path} cannot be read ({exc.strerror or type(exc).__name__}); "
                         "check the path and its permissions") from None
    check_card(card, path)  # every field, named, before anything is built from it
    try:
        pp = Preprocess.from_card(card["preprocess"])
    except P2VitError as exc:  # e.g. resize disagreeing with crop_pct
        raise P2VitError(f"model card {path}: {exc}") from None
    try:
        with seeded(0):
            model = VisionTransformer(**card["config"])
    except Exception as exc:  # noqa: BLE001 - keys p2vit does not check go to timm as they are
        # timm checks argument values with assert (e.g. embed_dim divisible by num_heads)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = f"{type(exc).__name__}: {first}" if first else \
            f"{type(exc).__name__}: an argument value is invalid"
        raise P2VitError(f"model card {path}: bad VisionTransformer config ({why}); fix the model card") from None
    name = card.get("name") or path.stem
    check_supported(model, name)
    sha = None
    if random_init:
        source = "random-init (seed 0)"
    else:
        wpath = Path(weights) if weights is not None else None
        if wpath is None:
            if not card.get("weights"):
                raise P2VitError(f"model card {path} names no weights file; pass --weights FILE "
                                 "or --random-init")
            wpath = path.parent / card["weights"]
            expected = card.get("weights_sha256")
            if expected and wpath.is_file():
                sha = sha256_of_file(wpath)
                if sha != expected.lower():
                    raise P2VitError(f"weights file {wpath} does not match the sha256 in {path}; "
                                     "the file is corrupt or belongs to another model")
        _load_weights_into(model, wpath, name)
        source = f"{WEIGHTS_FILE}{os.path.abspath(wpath)}"   # absolute: cosim reloads it from anywhere
        sha = sha or sha256_of_file(wpath)
    return LoadedModel(name=name, model=model.eval(), preprocess=pp,
                       class_names=card.get("classes"), source=source,
                       spec={"kind": "card", "card": str(path.resolve()), "name": name}, weights_sha256=sha)


def _is_safetensors(path: Path) -> bool:
    """Whether the file is in the safetensors format, by its content rather than its name (a
    safetensors file saved as pytorch_model.bin is common): 8 bytes of little-endian header length,
    then the JSON header's '{', within the file. Torch checkpoints start with a zip's 'PK' or a
    pickle's 0x80."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        head = b""   # the loader below reports why it cannot be read
    if len(head) < 9:
        return path.suffix == ".safetensors"
    return head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def read_state_dict(path: Path) -> dict:
    """A state dict from .safetensors or a torch checkpoint; one-line errors for anything else."""
    if path.is_dir():
        raise P2VitError(f"weights file {path} is a directory; pass the state dict or .safetensors file in it")
    if not path.is_file():
        raise P2VitError(f"weights file {path} does not exist (looked for {path.absolute()}); check --weights or the "
                         "model card's \"weights\" field, which is relative to the card")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            with open(path, "rb") as f:   # a file object: torch.load would go by a .safetensors name too
                sd = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many different types
        if "Unsupported global" in str(exc):   # torch's weights-only unpickler met a class: torch.save(model)?
            raise P2VitError(f"weights file {path} pickles objects other than tensors (a whole model saved with "
                             "torch.save(model)?); save torch.save(model.state_dict(), FILE) and pass that") from None
        raise P2VitError(f"weights file {path} cannot be read ({type(exc).__name__}); "
                         "it is corrupt or not a state dict / safetensors file") from None
    for key in ("state_dict", "model", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise P2VitError(f"weights file {path} holds no state dict of tensors; save torch.save(model.state_dict(), FILE) "
                         "and pass that")
    return sd


def _load_weights_into(model: nn.Module, path: Path, name: str) -> None:
    sd = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"{len(bad_shape)} with other shapes (e.g. {k}: file {tuple(sd[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        hint = ("; its keys start with 'module.' (saved from DataParallel): save "
                "{k.removeprefix('module.'): v for k, v in sd.items()} instead"
                if unexpected and all(k.startswith("module.") for k in sd) else "")
        raise P2VitError(f"weights file {path} does not fit model {name}: " + ", ".join(parts) + hint)
    # a float parameter stored as integers (an int8 export, say) would load truncated, without a word
    not_float = [k for k, v in own.items() if v.is_floating_point() and not sd[k].is_floating_point()]
    if not_float:
        raise P2VitError(f"weights file {path} holds {len(not_float)} float parameter(s) as {sd[not_float[0]].dtype} "
                         f"(e.g. {not_float[0]}); p2vit quantizes trained float weights: give the float checkpoint")
    as_float = {k: v.float() for k, v in sd.items()}   # float8/16/64 too; float64 past float32 becomes Inf
    # NaN or Inf would reach the quantizer, whose scales are then no power of two
    broken = [k for k, v in as_float.items() if sd[k].is_floating_point() and not np.isfinite(v.numpy()).all()]
    if broken:
        raise P2VitError(f"weights file {path} holds NaN or Inf values in {len(broken)} tensor(s) (e.g. {broken[0]}); "
                         "it is not a usable checkpoint (a diverged training run?)")
    model.load_state_dict(as_float)


def check_supported(model: nn.Module, name: str = "model") -> None:
    """Refuse anything but a standard timm VisionTransformer, naming what is unsupported."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block, VisionTransformer

    def refuse(what: str):
        raise P2VitError(f"{name} is not supported: {what}; p2vit supports timm VisionTransformer "
                         "models with standard pre-norm blocks and a class token")

    if type(model) is not VisionTransformer:
        refuse(f"{type(model).__module__}.{type(model).__name__} is not timm's VisionTransformer "
               "(distilled DeiT and other variants are not supported)")
    if getattr(model, "num_reg_tokens", 0):
        refuse("register tokens")
    if not model.has_class_token or model.global_pool != "token":
        refuse(f"pooling '{model.global_pool}' without class token readout")
    if model.no_embed_class:
        refuse("position embedding without the class token (no_embed_class)")
    if model.pos_embed is None:
        refuse("no learned position embedding")
    if model.dynamic_img_size:
        refuse("dynamic image size")
    for part in ("norm_pre", "fc_norm", "patch_drop"):
        mod = getattr(model, part, None)
        if mod is not None and not isinstance(mod, nn.Identity):
            refuse(f"{part} ({type(mod).__name__})")
    if not isinstance(model.patch_embed.norm, nn.Identity):
        refuse("a norm inside the patch embedding")
    if getattr(model, "attn_pool", None) is not None:
        refuse("attention pooling")
    if not isinstance(model.norm, nn.LayerNorm):
        refuse(f"final norm {type(model.norm).__name__} (LayerNorm required)")
    if not isinstance(model.head, nn.Linear):
        refuse("a head that is not one Linear layer")
    # every linear layer but QKV (qkv_bias) carries a bias in the integer model (numerics.md 2.3)
    no_bias = [n for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is None and not n.endswith("attn.qkv")]
    if no_bias:
        refuse(f"layers without bias ({no_bias[0]}{' and others' if len(no_bias) > 1 else ''}: proj_bias false?)")
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block:
            refuse(f"block {i} is {type(blk).__name__}, not timm's Block")
        if not isinstance(blk.ls1, nn.Identity) or not isinstance(blk.ls2, nn.Identity):
            refuse("layer scale (init_values)")
        attn = blk.attn
        for part in ("q_norm", "k_norm", "norm"):
            mod = getattr(attn, part, None)
            if mod is not None and not isinstance(mod, nn.Identity):
                refuse(f"attention {part} ({type(mod).__name__})")
        if not hasattr(attn, "qkv") or not isinstance(attn.qkv, nn.Linear):
            refuse(f"block {i} attention without a fused qkv Linear")
        if not isinstance(blk.norm1, nn.LayerNorm) or not isinstance(blk.norm2, nn.LayerNorm):
            refuse(f"block {i} norm is not LayerNorm")
        mlp = blk.mlp
        if type(mlp) is not Mlp or not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            refuse(f"block {i} MLP {type(mlp).__name__} (plain Mlp required)")
        if not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
            refuse(f"block {i} activation {mlp.act} (exact GELU required)")
