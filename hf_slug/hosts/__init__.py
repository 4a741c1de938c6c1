"""Hosts: models that carry a CLIP tower, unlearned through one protocol (`hosts.base.Host`).

`StableDiffusionHost` (`hosts.diffusion`: SD 1.x/2.x/SDXL text encoders) and `LlavaHost`
(`hosts.vlm`: a LLaVA's vision tower) say which tower and blocks are usable and what the host
calls its tensors; `hosts.base` checks a CLIPModel's tower against the host, maps names, runs
the one driver (`unlearn_on_host`) and builds the host-keyed delta (docs/architecture.md).
"""
