"""Writes a GGUF v3 file holding only the tokenizer metadata of a llama2.c
tokenizer.bin, for testing iq-run's GGUF tokenizer. The layout follows
ggml's docs/gguf.md; pieces get "▁" for spaces and lose the newlines
around <s> and </s>, as in llama.cpp's conversion of the same model.

usage: write_gguf.py TOKENIZER.bin OUT.gguf
"""
import struct
import sys

STRING, ARRAY, F32, I32, U32 = 8, 9, 6, 5, 4


def string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


BOOL = 7


def main() -> None:
    data = open(sys.argv[1], "rb").read()
    offset = 4
    pieces, scores = [], []
    while offset < len(data):
        score, length = struct.unpack_from("<fi", data, offset)
        pieces.append(data[offset + 8:offset + 8 + length])
        scores.append(score)
        offset += 8 + length
    types = []
    for index, piece in enumerate(pieces):
        piece = piece.strip(b"\n")
        if piece == b"<unk>":
            types.append(2)
        elif piece in (b"<s>", b"</s>"):
            types.append(3)
        elif piece.startswith(b"<0x") and len(piece) == 6:
            types.append(6)
        else:
            types.append(1)
            piece = piece.replace(b" ", "\u2581".encode())
        pieces[index] = piece

    entries = [
        string(b"tokenizer.ggml.model") + struct.pack("<I", STRING) + string(b"llama"),
        string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, len(pieces))
        + b"".join(string(piece) for piece in pieces),
        string(b"tokenizer.ggml.scores") + struct.pack("<IIQ", ARRAY, F32, len(scores))
        + struct.pack(f"<{len(scores)}f", *scores),
        string(b"tokenizer.ggml.token_type") + struct.pack("<IIQ", ARRAY, I32, len(types))
        + struct.pack(f"<{len(types)}i", *types),
        string(b"tokenizer.ggml.bos_token_id") + struct.pack("<II", U32, 1),
        string(b"tokenizer.ggml.eos_token_id") + struct.pack("<II", U32, 2),
        string(b"tokenizer.ggml.unknown_token_id") + struct.pack("<II", U32, 0),
    ]
    # An optional third argument "no-bos" records add_bos_token = false,
    # as GGUF files of chat models such as SmolLM2 do.
    if len(sys.argv) > 3 and sys.argv[3] == "no-bos":
        entries.append(string(b"tokenizer.ggml.add_bos_token") + struct.pack("<IB", BOOL, 0))
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    with open(sys.argv[2], "wb") as out:
        out.write(header + b"".join(entries))


if __name__ == "__main__":
    main()
