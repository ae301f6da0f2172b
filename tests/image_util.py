"""Images for the image-input tests: printed text rendered with Pillow (DejaVu Sans, from fonts-dejavu)."""

import base64
import io

from PIL import Image, ImageDraw, ImageFont

INVOICE = "Invoice total: 1,284.50 EUR"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def rendered(text: str, size=(640, 120), fmt: str = "PNG") -> bytes:
    """`text` printed in black on white, encoded as `fmt`."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((20, 40), text, fill="black", font=ImageFont.truetype(FONT, 32))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
