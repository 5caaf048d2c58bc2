#!/usr/bin/env python3
"""Writes Fashion-MNIST as a folder of PNG images in torchvision's ImageFolder layout,
OUT/train/<class>/<index>.png and OUT/val/<class>/<index>.png, for trying
`quadra-train train --dataset folder:OUT` and `quadra-train predict` on image files.

    python3 scripts/fashion-mnist-pngs.py OUT [PER_CLASS]

PER_CLASS training images per class (default 300) and a fifth as many validation images:
the first of each class in the IDX files (Debian's dataset-fashion-mnist, or
$QUADRA_DATA_DIR/fashion-mnist). Python's standard library only (PNG written with zlib).
"""
import gzip
import os
import struct
import sys
import zlib

# the dataset's class names, as folder names ('/' is not allowed in one)
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def data_dir():
    env = os.environ.get("QUADRA_DATA_DIR")
    return os.path.join(env, "fashion-mnist") if env else "/usr/share/datasets/fashion-mnist"


def write_png(path, width, height, pixels):
    """An 8-bit greyscale PNG of `pixels` (height rows of width bytes)."""
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def read_idx(prefix):
    """(images bytes, labels bytes) of the IDX pair whose names start with `prefix`."""
    root = data_dir()
    files = os.listdir(root)

    def read(kind, skip):
        name = next(f for f in files if f.startswith(f"{prefix}-{kind}"))
        path = os.path.join(root, name)
        with (gzip.open(path) if name.endswith(".gz") else open(path, "rb")) as f:
            return f.read()[skip:]

    return read("images", 16), read("labels", 8)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    for part, prefix, n in [("train", "train", per_class), ("val", "t10k", max(1, per_class // 5))]:
        images, labels = read_idx(prefix)
        count = [0] * len(CLASSES)
        for i, c in enumerate(labels):
            if count[c] >= n:
                continue
            folder = os.path.join(out, part, CLASSES[c])
            os.makedirs(folder, exist_ok=True)
            write_png(os.path.join(folder, f"{i:05d}.png"), 28, 28, images[i * 784:(i + 1) * 784])
            count[c] += 1
            if min(count) >= n:
                break
        print(f"{out}/{part}: {sum(count)} images in {len(CLASSES)} class folders")


if __name__ == "__main__":
    main()
