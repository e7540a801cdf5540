"""TR005 QR labels for the console: PNG files in a zip, an inline SVG for a printable sheet, and the decoding
of a photographed label (zxing-cpp on a Pillow image).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

import segno

from jsd.lorawan.tr005 import DeviceQr, build_qr

__all__ = ["MAX_PHOTO_BYTES", "decode_photo", "label_svg", "labels_zip", "qr_text"]

SCALE = 8
BORDER = 4  # modules of quiet zone, the minimum ISO/IEC 18004 asks for
MAX_PHOTO_BYTES = 15 * 1024 * 1024
MAX_PHOTO_PIXELS = 40_000_000


def qr_text(join_eui: bytes, dev_eui: bytes, profile_id: bytes, owner_token: str, serial: str | None = None) -> str:
    qr = DeviceQr(join_eui=join_eui, dev_eui=dev_eui, profile_id=profile_id, owner_token=owner_token.upper(),
                  serial=serial.upper() if serial else None)  # fmt: skip
    return build_qr(qr)


def _symbol(text: str) -> segno.QRCode:
    # Error correction M; the uppercase TR005 string lets segno use the compact alphanumeric mode.
    return segno.make_qr(text, error="m", boost_error=False)


def label_svg(text: str) -> str:
    """The QR code as an inline SVG element (no XML declaration), for a page or a printed sheet."""
    return str(_symbol(text).svg_inline(scale=SCALE, border=BORDER, omitsize=True))


def label_png(text: str) -> bytes:
    out = io.BytesIO()
    _symbol(text).save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()


def labels_zip(labels: Iterable[tuple[str, str]]) -> bytes:
    """(DevEUI, QR text) pairs as <DevEUI>.png files in one zip archive."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for dev_eui, text in labels:
            archive.writestr(f"{dev_eui.upper()}.png", label_png(text))
    return out.getvalue()


def decode_photo(data: bytes) -> list[str]:
    """The texts of the QR codes found in a photo (any format Pillow reads); empty when none is found."""
    import zxingcpp
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PHOTO_PIXELS:
                return []
            upright = ImageOps.exif_transpose(image).convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return []
    # Phone photos are large; a smaller copy decodes faster and as well (try_downscale covers the rest).
    if max(upright.size) > 2000:
        upright.thumbnail((2000, 2000))
    found = zxingcpp.read_barcodes(upright, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    return [code.text for code in found if code.text]
