"""ComfyUI entry point for ColorMNet video colorization.

Registers the nodes and the models/colormnet folder; loads no weights and touches no GPU.
"""

# ComfyUI imports this folder as a package. Test runners may import the file on its own (pytest does
# for a repository folder whose name is not an identifier, e.g. "comfyui-colormnet"): then there is
# nothing to register.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.host import register_model_folder

    register_model_folder()

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
