"""What ordinary data-science code expects of a notebook, without IPython: results as rich MIME
bundles (a pandas DataFrame as text/html beside text/plain), matplotlib on its Agg backend, and
figures shown as image/png displays on `plt.show()` and at the end of each execution, as
Jupyter's inline backend does. Nothing here is imported by code that does not use these."""
import sys

from . import capabilities, streams

# The methods a rich object may have (IPython's display protocol); an object with none of them is
# its repr alone, without looking further.
_PLAIN = {int, float, str, bytes, bool, list, tuple, dict, set, type(None)}  # no rich forms to look for
_RICH = ("_repr_mimebundle_", "_repr_html_", "_repr_markdown_", "_repr_svg_", "_repr_png_", "_repr_jpeg_",
         "_repr_json_", "_repr_latex_")

display_granted = False  # set by Session from the capabilities granted
_told = False  # the note that figures need the display capability was printed


def result_data(value, text):
    """A result's MIME bundle: {"text/plain": text}, plus the rich forms its type offers. A rich
    method that fails leaves the plain text alone, with a note on stderr (as IPython warns)."""
    kind = type(value)
    if kind in _PLAIN or not any(hasattr(kind, name) for name in _RICH):
        return {"text/plain": text}
    try:
        data, _ = capabilities.mimebundle(value)
    except Exception as exc:  # noqa: BLE001 (the code's own method; the result still shows)
        streams.stderr.write(f"capsule: {kind.__qualname__}'s rich display failed ({type(exc).__name__}: {exc}); "
                             "showing its repr\n")
        return {"text/plain": text}
    data["text/plain"] = text
    return data


def use_agg(matplotlib):
    """matplotlib's backend is Agg unless the policy's environment sets MPLBACKEND: no display
    server is reachable, and Agg renders the PNGs that figures are shown as. Its font list comes
    from the environment where `capsule env create` made one (_seed_font_list)."""
    import os
    if "MPLBACKEND" not in os.environ:
        matplotlib.use("agg")
    _seed_font_list(matplotlib)


def _seed_font_list(matplotlib):
    """Copy the font lists an environment holds (site-packages/.capsule-cache/matplotlib, made
    by `capsule env create`) into this session's matplotlib cache, where none is there yet: the
    first `import matplotlib.pyplot` then reads one rather than building it (about 0.4 s)."""
    import os
    try:
        seeds = os.path.join(os.path.dirname(os.path.dirname(matplotlib.__file__)), ".capsule-cache", "matplotlib")
        names = [name for name in os.listdir(seeds) if name.startswith("fontlist-") and name.endswith(".json")]
        if not names:
            return
        cache = matplotlib.get_cachedir()
        for name in names:
            target = os.path.join(cache, name)
            if not os.path.exists(target):
                with open(os.path.join(seeds, name), "rb") as source, open(target, "xb") as copy:
                    copy.write(source.read())
    except (OSError, TypeError, AttributeError):  # none made, a read-only cache: matplotlib builds its own
        pass


def patch_pyplot(pyplot):
    """`plt.show()` shows the open figures as displays and closes them."""
    def show(*args, **kwargs):
        show_figures(pyplot)
    show.__doc__ = pyplot.show.__doc__
    pyplot.show = show


def show_open_figures():
    """At the end of an execution: the figures still open, shown and closed (when pyplot is in use)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        show_figures(pyplot)


def show_figures(pyplot):
    global _told
    numbers = pyplot.get_fignums()
    if not numbers:
        return
    if not display_granted:
        if not _told:
            _told = True
            streams.stderr.write("capsule: figures are shown through the display capability, which this policy does not "
                                 "grant ([capabilities.display] enabled = true); they are closed unshown\n")
        pyplot.close("all")
        return
    import io
    from binascii import b2a_base64
    for number in numbers:
        figure = pyplot.figure(number)
        png = io.BytesIO()
        figure.savefig(png, format="png", bbox_inches="tight")
        capabilities.show({"image/png": b2a_base64(png.getvalue(), newline=False).decode("ascii"),
                           "text/plain": repr(figure)}, {})
        pyplot.close(figure)
