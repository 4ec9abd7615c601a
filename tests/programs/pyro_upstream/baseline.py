# Copyright Contributors to the Pyro project.
# SPDX-License-Identifier: Apache-2.0
#
# Vendored for ppl_vae's tests from pyro-ppl/pyro@ff6ae1c95 (examples/cvae/baseline.py), class bodies
# unchanged. Changes from upstream: removed train() (the loop over the MNIST loaders, early stopping, saving)
# and the imports only it used (copy, pathlib.Path, numpy, tqdm).

import torch
import torch.nn as nn
import torch.nn.functional as F


class BaselineNet(nn.Module):
    def __init__(self, hidden_1, hidden_2):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden_1)
        self.fc2 = nn.Linear(hidden_1, hidden_2)
        self.fc3 = nn.Linear(hidden_2, 784)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x.view(-1, 784)
        hidden = self.relu(self.fc1(x))
        hidden = self.relu(self.fc2(hidden))
        y = torch.sigmoid(self.fc3(hidden))
        return y


class MaskedBCELoss(nn.Module):
    def __init__(self, masked_with=-1):
        super().__init__()
        self.masked_with = masked_with

    def forward(self, input, target):
        target = target.view(input.shape)
        # only calculate loss on target pixels (value = -1)
        loss = F.binary_cross_entropy(
            input[target != self.masked_with],
            target[target != self.masked_with],
            reduction="none",
        )
        return loss.sum()
