"""The shape of a model as the accelerator sees it (ModelShape), from whatever MODEL names: a short
name or a model card (built on PyTorch's meta device: no weights are read or downloaded), a saved
IR, or a build directory (then also the design it was generated for: BuiltDesign)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from quantizer.config import softmax_settings
from quantizer.errors import P2VitError
from quantizer.ir import linear_layer_names
from quantizer.outputs import RunInput, card_inputs

from .hwconfig import DEFAULT_DRAM_GBS, HwConfig


@dataclass(frozen=True)
class ModelShape:
    name: str
    img_h: int
    img_w: int
    patch: int
    in_chans: int
    dim: int
    heads: int
    depth: int
    hidden: int
    num_classes: int
    res_bits: int = 8
    attn_bits: int = 4
    layer_bits: tuple = ()      # ((layer name, weight bits), ...); missing layers: 8
    attn_rounding: str = "geometric"   # the softmax codes' rounding (QuantConfig.attn_rounding): their comparators

    @property
    def tokens(self) -> int:
        return 1 + (self.img_h // self.patch) * (self.img_w // self.patch)

    @property
    def kp(self) -> int:
        return self.in_chans * self.patch ** 2

    @property
    def dh(self) -> int:
        return self.dim // self.heads

    @property
    def param_len(self) -> int:
        """Length of the per-output parameter arrays bias and shift: the widest layer output, QKV's
        3D, FC1's hidden or the head's classes (the top's OMAX)."""
        return max(3 * self.dim, self.hidden, self.num_classes)

    @property
    def reduction_lengths(self) -> dict[str, int]:
        """K of the MAC-array layers, named as codegen.render.reduction_lengths names them."""
        return {"embed": self.kp, "D": self.dim, "hidden": self.hidden, "head dim": self.dh}

    def bits(self, layer: str) -> int:
        return dict(self.layer_bits).get(layer, 8)

    def linear_layers(self) -> list[str]:
        return linear_layer_names(self.depth)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layer_bits"] = dict(self.layer_bits)
        d["tokens"] = self.tokens
        return d


def _uniform_bits(layers: list[str], w_bits: int) -> tuple:
    from quantizer.config import QuantConfig
    from quantizer.quantize import layer_bits

    cfg = QuantConfig(w_bits=w_bits)
    return tuple((n, layer_bits(cfg, n)) for n in layers)


def shape_from_meta(meta: dict) -> ModelShape:
    """The shape of a quantized model from its IR metadata (manifest.json "meta")."""
    m, q = meta["model"], meta["quant"]
    s = ModelShape(name=m["name"], img_h=m["img_size"][0], img_w=m["img_size"][1], patch=m["patch"],
                   in_chans=m["in_chans"], dim=m["dim"], heads=m["heads"], depth=m["depth"],
                   hidden=m["hidden"], num_classes=m["num_classes"], res_bits=q["res_bits"],
                   attn_bits=q["attn_bits"], attn_rounding=softmax_settings(q)["attn_rounding"])
    bits = meta.get("layer_bits") or dict(_uniform_bits(s.linear_layers(), q["w_bits"]))
    return replace(s, layer_bits=tuple(sorted(bits.items())))


def shape_from_ir(ir) -> ModelShape:
    return shape_from_meta(ir.meta)


def with_weight_bits(shape: ModelShape, w_bits: int | None) -> ModelShape:
    """shape with every linear layer at w_bits (None: as it is)."""
    return shape if w_bits is None else replace(shape, layer_bits=_uniform_bits(shape.linear_layers(), w_bits))


def load_shape(spec: str, w_bits: int | None = None, res_bits: int = 8, attn_bits: int = 4) -> ModelShape:
    """MODEL as the CLI takes it: a short name, a model card, a build directory or an IR
    directory. No weights are read: timm builds the model on the meta device."""
    p = Path(spec)
    built = design_of_build(spec)
    if built is not None:
        return with_weight_bits(built.shape, w_bits)
    manifest = p / "manifest.json"
    if p.is_dir() and manifest.is_file():
        try:
            s = shape_from_meta(json.loads(manifest.read_text())["meta"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise P2VitError(f"{manifest} is not a p2vit IR manifest ({exc}); rebuild it") from None
        return with_weight_bits(s, w_bits)
    if p.is_dir():
        raise P2VitError(f"{spec} is a directory without a p2vit build or IR (no manifest.json); "
                         "pass a model name, a model card or a build directory")
    import torch

    from quantizer.models import load_model

    with torch.device("meta"):
        lm = load_model(spec, random_init=True)
    s = shape_of_model(lm, res_bits, attn_bits)
    return replace(s, layer_bits=_uniform_bits(s.linear_layers(), w_bits or 8))


@dataclass(frozen=True)
class BuiltDesign:
    """What a build directory was generated for: its model's shape (from the IR the build
    records), its hardware and the DRAM bandwidth of its target (or the default)."""
    shape: ModelShape
    hw: HwConfig
    dram_gbs: float
    target: dict | None   # the --target the design was chosen for (fpga_target.Target.to_json())


def is_ir_dir(spec: str) -> bool:
    """Whether spec is an IR directory (a manifest.json, not a build)."""
    p = Path(spec)
    return p.is_dir() and (p / "manifest.json").is_file() and design_of_build(spec) is None


def is_build_dir(spec: str) -> bool:
    """Whether spec looks like a build directory (python -m codegen --out), whole or not."""
    p = Path(spec)
    return p.is_dir() and any((p / n).exists() or (p / n).is_symlink() for n in ("build.json", "ir", "hls", "csim"))


def model_inputs(spec: str) -> list[RunInput]:
    """What MODEL's files are (for check_outputs_apart): a build's, an IR's, or the card itself."""
    from .module import build_inputs

    p = Path(spec)
    if is_build_dir(spec):
        return build_inputs(p)
    if p.is_dir():   # a saved IR
        return [RunInput(f"the input MODEL {p / f}", p / f) for f in ("manifest.json", "params.bin")]
    return card_inputs("MODEL", p)


def design_of_build(spec: str) -> BuiltDesign | None:
    """The design of build directory spec (None when spec is not one). Refuses, in one line, a build
    whose build.json is missing, corrupt or edited, or whose ir/ is missing, corrupt or not the IR
    the build was made from."""
    if not is_build_dir(spec):
        return None
    from .module import read_build_info, read_build_ir

    info = read_build_info(spec)
    ir = read_build_ir(spec, info)
    try:
        hw = HwConfig(**info["hw"])
    except (KeyError, TypeError):
        raise P2VitError(f"{spec}/build.json has no usable hardware record; rebuild with python -m codegen") from None
    target = info.get("target")
    return BuiltDesign(shape_from_ir(ir), hw, float((target or {}).get("dram_gbs", DEFAULT_DRAM_GBS)), target)


def shape_of_model(lm, res_bits: int = 8, attn_bits: int = 4, w_bits: int = 8) -> ModelShape:
    """The shape of a loaded timm ViT (quantizer.models.LoadedModel), w_bits weights (the embedding's 8)."""
    model = lm.model
    img_h, img_w = model.patch_embed.img_size
    s = ModelShape(name=lm.name, img_h=img_h, img_w=img_w, patch=model.patch_embed.patch_size[0],
                   in_chans=model.patch_embed.proj.in_channels, dim=model.embed_dim,
                   heads=model.blocks[0].attn.num_heads, depth=len(model.blocks),
                   hidden=model.blocks[0].mlp.fc1.out_features, num_classes=model.num_classes,
                   res_bits=res_bits, attn_bits=attn_bits)
    if s.tokens != model.pos_embed.shape[1]:
        raise P2VitError(f"{lm.name}: {model.pos_embed.shape[1]} position embeddings for {s.tokens} tokens")
    return replace(s, layer_bits=_uniform_bits(s.linear_layers(), w_bits))
