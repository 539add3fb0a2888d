"""Words users search the node list with. ComfyUI 0.3.64's frontend matches node ids and display
names only (fuzzy), so the main node's display name carries the British spelling too; newer
ComfyUI versions also read a class's SEARCH_ALIASES."""

from __future__ import annotations

SEARCH_ALIASES = ["colorize", "colourise", "colourize", "colorise", "recolor", "recolour",
                  "video colorization", "video colourisation", "black and white to colour", "exemplar"]
