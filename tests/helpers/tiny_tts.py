"""Tiny random-weight models in ChatTTS's and Chatterbox's own file layouts, for tests.

The files are built with the engines' own classes (so their keys and shapes are exactly what
the real loaders read), with shrunk sizes recorded in the model folder's override file
(``voice-chattts.json``, see voice/tts/chattts.py). The audio they make is noise.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import pytest

#: Shrunk ChatTTS sizes (the real ones: GPT 768 wide x 20 layers, Vocos 512 x 8, ...).
CHATTTS_OVERRIDES: dict = {
    "gpt": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "max_position_embeddings": 1024,
    },
    "embed": {"hidden_size": 32},
    "dvae": {
        "encoder": {"hidden": 16, "n_layer": 1, "bn_dim": 8},
        "decoder": {"idim": 16, "odim": 16, "hidden": 16, "n_layer": 1, "bn_dim": 8},
    },
    "decoder": {"idim": 16, "odim": 16, "hidden": 16, "n_layer": 1, "bn_dim": 8},
    "vocos": {"backbone": {"init_args": {"dim": 16, "intermediate_dim": 32, "num_layers": 1}},
              "head": {"init_args": {"dim": 16}}},
}

_SPECIAL = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "[Stts]", "[Ptts]", "[spk_emb]", "[empty_spk]", "[Ebreak]", "[Sbreak]", "[uv_break]", "[lbreak]",
    *[f"[break_{i}]" for i in range(8)],
    *[f"[speed_{i}]" for i in range(10)],
    *[f"[oral_{i}]" for i in range(10)],
    *[f"[laugh_{i}]" for i in range(3)],
]


def _bert_tokenizer(folder: Path) -> int:
    """A small BERT WordPiece tokenizer with ChatTTS's control tokens; returns its size."""
    from transformers import BertTokenizerFast

    words = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-") + [
        "the", "hello", "world", "this", "is", "a", "test", "one", "two", "three", "four", "five",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(_SPECIAL + words + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.add_special_tokens({"additional_special_tokens": _SPECIAL[5:]})
    tok.save_pretrained(str(folder))
    vocab.unlink(missing_ok=True)
    smap = folder / "special_tokens_map.json"
    if not smap.exists():
        smap.write_text(json.dumps({"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                                    "sep_token": "[SEP]", "mask_token": "[MASK]"}))
    return len(tok)


def build_tiny_chattts(root: Path, seed: int = 0) -> Path:
    """Write asset/{Decoder,DVAE,Embed,Vocos}.safetensors, asset/gpt, asset/tokenizer and the
    shrunk-size override into ``root``; returns ``root``."""
    import numpy as np
    import pybase16384 as b14
    import torch
    from safetensors.torch import save_file

    from voice.tts.chattts import apply_overrides, write_sha256_map
    from voice.tts.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    import ChatTTS
    from ChatTTS.model import DVAE, Embed
    from transformers import LlamaConfig, LlamaModel
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    torch.manual_seed(seed)
    asset = root / "asset"
    asset.mkdir(parents=True, exist_ok=True)
    n_text = _bert_tokenizer(asset / "tokenizer")
    overrides = copy.deepcopy(CHATTTS_OVERRIDES)
    overrides["gpt"]["num_text_tokens"] = n_text
    overrides["embed"]["num_text_tokens"] = n_text
    dim = overrides["gpt"]["hidden_size"]
    stat = np.concatenate([np.full(dim, 0.5, np.float16), np.zeros(dim, np.float16)])  # std, mean
    overrides["spk_stat"] = b14.encode_to_string(stat.tobytes())
    (root / "voice-chattts.json").write_text(json.dumps(overrides, indent=1))

    config = apply_overrides(ChatTTS.Chat().config, overrides)

    def save(module: torch.nn.Module, name: str) -> None:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(asset / name))

    vocos = Vocos(
        feature_extractor=instantiate_class(args=(), init=asdict(config.vocos.feature_extractor)),
        backbone=instantiate_class(args=(), init=asdict(config.vocos.backbone)),
        head=instantiate_class(args=(), init=asdict(config.vocos.head)),
    )
    save(vocos, "Vocos.safetensors")
    dvae = DVAE(decoder_config=asdict(config.dvae.decoder), encoder_config=asdict(config.dvae.encoder),
                vq_config=asdict(config.dvae.vq), dim=config.dvae.decoder.idim)
    save(dvae, "DVAE.safetensors")
    decoder = DVAE(decoder_config=asdict(config.decoder), dim=config.decoder.idim)
    save(decoder, "Decoder.safetensors")
    embed = Embed(config.embed.hidden_size, config.embed.num_audio_tokens, config.embed.num_text_tokens,
                  config.embed.num_vq)
    save(embed, "Embed.safetensors")
    g = config.gpt
    llama = LlamaModel(LlamaConfig(
        hidden_size=g.hidden_size, intermediate_size=g.intermediate_size,
        num_attention_heads=g.num_attention_heads, num_hidden_layers=g.num_hidden_layers,
        max_position_embeddings=g.max_position_embeddings, use_cache=False, vocab_size=8,
    ))
    llama.save_pretrained(str(asset / "gpt"), safe_serialization=True)
    write_sha256_map(root, root / "sha256_map.json")
    return root


@pytest.fixture(scope="session")
def tiny_chattts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chattts(tmp_path_factory.mktemp("tiny-chattts"))


#: Shrunk Chatterbox sizes (see voice/tts/chatterbox.py build_t3/build_s3gen; the release: T3
#: Llama 1024 x 30 layers, S3Gen 264 M parameters). Widths the library hard-codes stay as they are.
CHATTERBOX_SIZES: dict = {
    "t3": {
        "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "head_dim": 16},
        "hp": {"use_perceiver_resampler": False},  # its Perceiver is fixed at 1024 wide
    },
    "s3gen": {
        "tokenizer": {"n_audio_state": 128, "n_audio_head": 2, "n_audio_layer": 1},  # 64 per head: fixed
        "encoder": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1},
        "estimator": {"channels": [32], "attention_head_dim": 16, "n_blocks": 1, "num_mid_blocks": 1,
                      "num_heads": 2},
        "hift": {"base_channels": 16, "f0_cond_channels": 16},
    },
}


def _text_tokenizer(path: Path) -> None:
    """A character tokenizer with Chatterbox's special tokens ([START], [STOP], [UNK], [SPACE])."""
    import string

    from tokenizers import Tokenizer, models

    specials = ["[STOP]", "[START]", "[UNK]", "[SPACE]"]
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation) - set("[]"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=1000))
    from tokenizers import pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.add_special_tokens(specials)
    tok.save(str(path))


def _short_replies(t3) -> None:
    """Random weights never say "stop"; make 24 speech tokens and the stop token the likely ones
    (a constant residual channel read by the speech head), so a reply is a few dozen tokens."""
    import torch

    stop = t3.hp.stop_speech_token
    with torch.no_grad():
        for emb in (t3.text_emb, t3.speech_emb, t3.text_pos_emb.emb, t3.speech_pos_emb.emb):
            emb.weight[:, 0] = 0.5
        for layer in t3.tfmr.layers:
            layer.self_attn.o_proj.weight[0, :] = 0
            layer.mlp.down_proj.weight[0, :] = 0
        w = t3.speech_head.weight
        w.normal_(0.0, 0.02)
        w[:, 0] = 0
        chosen = torch.randperm(6561)[:24]
        w[chosen, 0] = 40.0
        w[stop, 0] = 40.0


def build_tiny_chatterbox(root: Path, seed: int = 0) -> Path:
    """ve.safetensors, t3_cfg.safetensors, s3gen.safetensors, tokenizer.json and the sizes file."""
    import torch
    from safetensors.torch import save_file

    from voice.tts.chatterbox import SIZES_FILE, build_s3gen, build_t3, build_voice_encoder
    from voice.tts.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    sizes = copy.deepcopy(CHATTERBOX_SIZES)
    (root / SIZES_FILE).write_text(json.dumps(sizes, indent=1))

    def save(module: torch.nn.Module, name: str) -> None:
        save_file({k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}, str(root / name))

    save(build_voice_encoder(sizes), "ve.safetensors")
    t3 = build_t3(sizes["t3"])
    _short_replies(t3)
    save(t3, "t3_cfg.safetensors")
    save(build_s3gen(sizes["s3gen"]), "s3gen.safetensors")
    _text_tokenizer(root / "tokenizer.json")
    return root


@pytest.fixture(scope="session")
def tiny_chatterbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chatterbox(tmp_path_factory.mktemp("tiny-chatterbox"))


@pytest.fixture(scope="session")
def reference_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of a voiced-like signal (harmonics + noise) at 24 kHz to clone from (Turbo wants > 5 s)."""
    import numpy as np
    import soundfile as sf

    sr = 24000
    t = np.arange(6 * sr) / sr
    rng = np.random.default_rng(1)
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.2 + 0.01 * rng.standard_normal(len(t))
    path = tmp_path_factory.mktemp("ref") / "ref.wav"
    sf.write(path, wav.astype(np.float32), sr)
    return path


CHATTERBOX_TURBO_SIZES: dict = {
    "t3": {"gpt2": {"n_embd": 32, "hidden_size": 32, "n_head": 2, "n_layer": 1, "n_positions": 2048,
                    "n_ctx": 2048}},
    "s3gen": CHATTERBOX_SIZES["s3gen"],
}


def _gpt2_tokenizer(root: Path) -> None:
    """Small GPT-2 byte-level BPE tokenizer files (vocab.json, merges.txt, tokenizer.json, ...)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = ["Hello world. This is a test. One two three four five.", "The quick brown fox jumps over the lazy dog."]
    bpe.train_from_iterator(corpus * 20, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(root))
    tok = GPT2TokenizerFast(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"))
    tok.save_pretrained(str(root))


def build_tiny_chatterbox_turbo(root: Path, seed: int = 0) -> Path:
    """ve.safetensors, t3_turbo_v1.safetensors, s3gen_meanflow.safetensors, GPT-2 tokenizer files."""
    import torch
    from safetensors.torch import save_file

    from voice.tts.chatterbox import SIZES_FILE, build_s3gen, build_t3, build_voice_encoder
    from voice.tts.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    sizes = copy.deepcopy(CHATTERBOX_TURBO_SIZES)
    (root / SIZES_FILE).write_text(json.dumps(sizes, indent=1))

    def save(module: torch.nn.Module, name: str) -> None:
        save_file({k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}, str(root / name))

    save(build_voice_encoder(sizes), "ve.safetensors")
    t3 = build_t3(sizes["t3"], turbo=True)
    with torch.no_grad():  # short replies: 24 speech tokens and "stop" are the likely ones
        t3.speech_head.weight.normal_(0.0, 0.001)
        t3.speech_head.bias.zero_()
        t3.speech_head.bias[torch.randperm(6561)[:24]] = 20.0
        t3.speech_head.bias[t3.hp.stop_speech_token] = 20.0
    save(t3, "t3_turbo_v1.safetensors")
    save(build_s3gen(sizes["s3gen"], meanflow=True), "s3gen_meanflow.safetensors")
    _gpt2_tokenizer(root)
    return root


@pytest.fixture(scope="session")
def tiny_chatterbox_turbo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chatterbox_turbo(tmp_path_factory.mktemp("tiny-chatterbox-turbo"))
