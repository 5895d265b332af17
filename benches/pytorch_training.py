"""Training speed of PyTorch (CPU) on the network, loss, data and batch size
of `anomalyd train`, for benches/training.sh.

Reads what `cargo bench --bench training -- --write DIR` wrote: normalised
training and validation windows, the frozen feature matrix of the
perceptual term, and shapes.json. Mirrors src/train/: the 1-D convolutional
autoencoder (network.rs), corruption by Gaussian noise then masking
(corrupt.rs), the hybrid loss a*MSE + b*mean((F(x') - F(x))^2) +
c*mean(|latent|) with the same dense feature matrix (loss.rs), Adam with
Burn's defaults (betas 0.9, 0.999, eps 1e-5), shuffled batches. Prints one
JSON line per epoch with the seconds of its training batches (validation,
run after each epoch as anomalyd does, is not counted).

Usage: python benches/pytorch_training.py DIR EPOCHS [THREADS]
(THREADS: intra-op threads; PyTorch's default is one per core.)
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Autoencoder(nn.Module):
    def __init__(self, channels, window_len, widths, kernel, latent):
        super().__init__()
        padding = kernel // 2
        layers, width_in = [], channels
        for width in widths:
            layers += [nn.Conv1d(width_in, width, kernel, stride=2, padding=padding), nn.ReLU()]
            width_in = width
        self.encoder = nn.Sequential(*layers)
        self.encoded_width = widths[-1]
        self.encoded_len = window_len // 2 ** len(widths)
        flat = self.encoded_width * self.encoded_len
        self.encoder_linear = nn.Linear(flat, latent)
        self.decoder_linear = nn.Linear(latent, flat)
        # As NetworkConfig::decoder_layers: back through the widths, ending at the first.
        decoder, width_in = [], widths[-1]
        for width in list(reversed(widths[:-1])) + [widths[0]]:
            decoder += [nn.ConvTranspose1d(width_in, width, 4, stride=2, padding=1), nn.ReLU()]
            width_in = width
        self.decoder = nn.Sequential(*decoder)
        self.output = nn.Conv1d(widths[0], channels, kernel, padding=padding)

    def forward(self, x):
        latent = self.encoder_linear(self.encoder(x).flatten(1))
        flat = torch.relu(self.decoder_linear(latent))
        x = flat.reshape(-1, self.encoded_width, self.encoded_len)
        return self.output(self.decoder(x)), latent


def main():
    directory, epochs = Path(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        torch.set_num_threads(int(sys.argv[3]))
    shapes = json.loads((directory / "shapes.json").read_text())
    c, length = shapes["channels"], shapes["window_len"]

    def windows(name, count):
        values = np.fromfile(directory / name, dtype="<f4")
        return torch.from_numpy(values.reshape(count, c, length).copy())

    train = windows("train.f32", shapes["train_windows"])
    validation = windows("validation.f32", shapes["validation_windows"])
    features = torch.from_numpy(
        np.fromfile(directory / "features.f32", dtype="<f4").reshape(length, shapes["feature_columns"]).copy()
    )
    loss_config = shapes["loss"]
    torch.manual_seed(42)
    model = Autoencoder(c, length, shapes["widths"], shapes["kernel_size"], shapes["latent_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=shapes["learning_rate"], betas=(0.9, 0.999), eps=1e-5)

    def loss_terms(reconstruction, clean, latent):
        pointwise = ((reconstruction - clean) ** 2).mean()
        f_reconstruction = reconstruction.reshape(-1, length) @ features
        f_clean = clean.reshape(-1, length) @ features
        perceptual = ((f_reconstruction - f_clean) ** 2).mean()
        sparsity = latent.abs().mean()
        return (
            loss_config["pointwise_weight"] * pointwise
            + loss_config["perceptual_weight"] * perceptual
            + loss_config["sparsity_weight"] * sparsity
        )

    batch = shapes["batch_size"]
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        total, batches = 0.0, 0
        model.train()
        for indices in torch.randperm(len(train)).split(batch):
            clean = train[indices]
            corrupted = clean + torch.randn_like(clean) * loss_config["noise_std"]
            corrupted = corrupted.masked_fill(torch.rand_like(clean) < loss_config["mask_probability"], 0.0)
            reconstruction, latent = model(corrupted)
            loss = loss_terms(reconstruction, clean, latent)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        seconds = time.perf_counter() - started
        model.eval()
        validation_loss = 0.0
        with torch.no_grad():
            for chunk in validation.split(512):
                reconstruction, latent = model(chunk)
                validation_loss += loss_terms(reconstruction, chunk, latent).item() * len(chunk)
        validation_loss /= len(validation)
        print(json.dumps({
            "engine": f"pytorch {torch.__version__}, {torch.get_num_threads()} threads",
            "epoch": epoch,
            "train_windows": len(train),
            "seconds": round(seconds, 3),
            "train_loss": round(total / batches, 5),
            "validation_loss": round(validation_loss, 5),
        }), flush=True)


if __name__ == "__main__":
    main()
