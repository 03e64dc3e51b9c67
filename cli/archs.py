"""``probe archs``: its options and its body."""

from __future__ import annotations

import click

from probe.cli.options import errors_as_messages

OWN_NETWORK = """\
Your own network: --arch MODULE:FUNCTION names any importable function (or class) that returns an nn.Module; it
gets those of in_channels, num_classes and input_size it takes, and --arch-option KEY=VALUE. torchvision's ResNet,
VGG, MobileNet-V3, EfficientNet, ConvNeXt and ViT are cut at their stages (--arch torchvision.models:resnet18);
another module needs --cut-at PATH,PATH,... (the dotted paths of the modules to cut after), a LayeredNet nothing.
Or register a builder with @probe.register_architecture(NAME), or in entry point group probe.architectures."""


@click.command()
@errors_as_messages
def archs() -> None:
    """List the registered architectures (those of installed packages' entry points too), their layers and
    options, and how to use a network of your own."""
    from probe.architectures.registry import REGISTRY, describe_options, load_plugins

    load_plugins()
    for name, a in REGISTRY.items():
        where = "" if a.origin == "probe" else f" ({a.origin}, {a.builder})"
        if a.layers:
            layers = f"cut points: {', '.join(a.cut_points)}; classifier: {a.layers[-1]}"
        else:
            layers = "layers: those of the built network, learnt when a study is planned"
        cuts = f"; cut after {', '.join(a.cut_at)}" if a.cut_at else ""
        click.echo(f"{name}{where}: {a.description}\n  {layers}{cuts}\n"
                   f"  default init: {a.default_init}; options: {describe_options(a.options)}")
    click.echo(f"\n{OWN_NETWORK}")
