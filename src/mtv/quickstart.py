"""The public MTV README's Quick Start, unchanged but for where the model and the image come from.

    python -m mtv.quickstart MODEL_DIR IMAGE [TEXT ...]
"""

import sys

import torch
from PIL import Image
from transformers import SiglipModel, SiglipProcessor

if len(sys.argv) < 3:
    sys.exit("usage: python -m mtv.quickstart MODEL_DIR IMAGE [TEXT ...]  (an mtv export and a photo)")
model_dir, image_path = sys.argv[1], sys.argv[2]

model = SiglipModel.from_pretrained(model_dir)
processor = SiglipProcessor.from_pretrained(model_dir)

image = Image.open(image_path)

texts = sys.argv[3:] or ["a photo of 2 cats", "a photo of 2 dogs"]
inputs = processor(text=texts, images=image, padding="max_length", return_tensors="pt")

with torch.no_grad():
    outputs = model(**inputs)

logits_per_image = outputs.logits_per_image
probs = torch.softmax(logits_per_image, dim=1)
print(f"{probs[0][0]:.1%} that image 0 is '{texts[0]}'")
