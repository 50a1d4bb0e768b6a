# %% [markdown]
# # Pretrain, export, load anywhere
# A notebook-style script (`# %%` cells; run it whole with `python docs/export_example.py`): BYOL on 64 digits
# with a ResNet-18 (CIFAR stem) for two steps, then its online backbone exported and loaded into a fresh
# torchvision model and a fresh timm model (timm's ResNets use torchvision's module names), with identical
# features. Raise `data.train_subset` and `trainer.epochs` for a real run.

# %%
import tempfile
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import load_file

from ssl_zoo import api

work = Path(tempfile.mkdtemp(prefix="ssl-zoo-example-"))
run_dir = api.train("byol", data="digits", encoder="resnet18_cifar", out_dir=str(work / "runs"),
                    **{"data.train_subset": 64, "trainer.batch_size": 32, "trainer.epochs": 1,
                       "monitor.num_images": 32, "eval.enabled": False, "progress_bar": False})
print(api.results(run_dir)["status"])  # probes skipped to keep the example short: `ssl-zoo eval run_dir=...` adds them

# %% export: backbone.safetensors (library naming) + card.json
out = api.export(run_dir, work / "export")
card = api.load_backbone(out)  # ssl-zoo's own loader, from the card
weights = load_file(str(out / "backbone.safetensors"))

# %% torchvision: ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool) and no classifier; 1-channel digits
tv = torchvision.models.resnet18()
tv.fc = torch.nn.Identity()
tv.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
tv.maxpool = torch.nn.Identity()
print("torchvision:", tv.load_state_dict(weights))

# %% timm: the same stem change on timm's resnet18
tm = timm.create_model("resnet18", num_classes=0, in_chans=1)
tm.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
tm.maxpool = torch.nn.Identity()
print("timm:", tm.load_state_dict(weights))

# %% identical features from all three on the evaluation transform of the run
cfg = api.config("byol", data="digits", encoder="resnet18_cifar")
images = api.load_data(cfg).test_x[:32]
feats = [api.features(net.eval(), images, cfg) for net in (api.load_backbone(run_dir), tv, tm, card)]
for f in feats[1:]:
    assert torch.allclose(f, feats[0], atol=1e-5)
print("features", tuple(feats[0].shape), "identical in ssl-zoo, torchvision and timm")
