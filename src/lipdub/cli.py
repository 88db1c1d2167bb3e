"""The ``lipdub`` command line: identify, sync, and the service commands.

Errors the user can fix print one line on stderr and exit 2; nothing prints a traceback
for bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lipdub.errors import LipdubError
from lipdub.service.cli import register


def _flags_take_no_value() -> None:
    """typer's rich help shows a type for a flag ('--json <bool>'), as if it took a
    value; click's plain help never did. A flag (not a counter) shows none."""
    shown = typer.core.TyperOption.display_type_rich
    if getattr(shown, "lipdub_flags", False):
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return shown(self, ctx)

    display_type_rich.lipdub_flags = True  # type: ignore[attr-defined]
    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Lip-sync dubbing: identify faces in a video, make them speak new audio.")
register(app)
err = Console(stderr=True)
out = Console()


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[float], None]]:
    """A Rich progress bar on stderr, fed fractions 0..1; silent when disabled."""
    if not enabled:
        yield lambda _f: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda f: bar.update(task, completed=f)


def _check_length(video: Path) -> None:
    """Refuse a clip shorter than the API accepts (LIPDUB_MIN_VIDEO_MS, 1 s by default),
    with the API's words: the two entry points agree on what they take."""
    from lipdub.config import Settings
    from lipdub.errors import InputError
    from lipdub.media.probe import probe

    try:
        least = Settings.from_env().min_video_ms
    except ValueError:  # a service setting the CLI does not use is wrong: the default
        least = Settings().min_video_ms
    info = probe(video)
    if info.frame_count <= 1:  # what the API says of an image sent as video_url
        raise InputError(f"{video.name} is a still image (one frame), not a video: give an "
                         f"mp4 or mov of at least {least / 1000:g} s.")
    if info.duration_ms < least:
        raise InputError(f"{video.name} lasts {info.duration_ms} ms: give a video of at "
                         f"least {least / 1000:g} s.")


def _fail(e: Exception) -> None:
    detail = getattr(e, "detail", "")  # NoFacesError: what was searched and found
    err.print(f"[red]error:[/red] {e}{f' ({detail})' if detail else ''}", highlight=False,
              soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def identify(
    video: Annotated[
        Path, typer.Argument(metavar="VIDEO", help="Video file (mp4, mov, mkv, webm...).")
    ],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Session directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
    contact_sheet: Annotated[
        Path | None, typer.Option("--contact-sheet", help="Write a JPEG of all faces.")
    ] = None,
    min_face_px: Annotated[
        int, typer.Option(help="Ignore faces smaller than this (box side, pixels).")
    ] = 40,
    min_visible_ms: Annotated[
        int, typer.Option(help="Leave out people visible for less than this in total.")
    ] = 400,
) -> None:
    """Find every face in VIDEO: ids, visible segments, thumbnails."""
    from dataclasses import replace

    from lipdub.faces.contact_sheet import contact_sheet as draw
    from lipdub.faces.identify import IdentifySettings
    from lipdub.faces.identify import identify as run
    from lipdub.faces.session import Session, span_json

    base = IdentifySettings()
    settings = replace(base, min_visible_ms=min_visible_ms,
                       tracker=replace(base.tracker, min_face_px=min_face_px))

    try:
        _check_length(video)
        sid = Session.new_id()
        target = out_dir or Path(".lipdub") / "sessions" / sid
        with _progress("identifying faces", enabled=not as_json and sys.stderr.isatty()) as cb:
            session = run(video, out_dir=target, progress=cb, session_id=sid, settings=settings)
        if contact_sheet is not None:
            draw(session, contact_sheet)
    except LipdubError as e:
        _fail(e)
        return
    if as_json:
        v = session.video
        print(json.dumps({
            "session_id": session.session_id,
            "session_dir": str(target),
            "video": {"duration_ms": v.duration_ms, "fps": v.fps, "width": v.width,
                      "height": v.height, "has_audio": v.has_audio},
            "faces": [
                {"face_id": f.face_id, "start_time": f.start_ms, "end_time": f.end_ms,
                 "segments": [list(s) for s in f.segments],
                 "thumbnail": str(session.thumbnail_path(f)),
                 "not_renderable": [span_json(n) for n in f.not_renderable]}
                for f in session.faces
            ],
            "unusable": [u.to_json() for u in session.unusable],
        }))
        return
    v = session.video
    out.print(f"[bold]{session.session_id}[/bold]  {v.width}x{v.height}  {v.fps:g} fps  "
              f"{v.duration_ms / 1000:.2f} s  audio: {'yes' if v.has_audio else 'no'}")
    table = Table("face_id", "longest span", "segments", "not re-rendered", "thumbnail")
    for f in session.faces:
        segs = ", ".join(f"{a / 1000:.2f}-{b / 1000:.2f}s" for a, b in f.segments)
        off = ", ".join(f"{a / 1000:.2f}-{b / 1000:.2f}s {why}"
                        for a, b, why in f.not_renderable) or "-"
        table.add_row(f.face_id, f"{f.start_ms}-{f.end_ms} ms", segs, off,
                      str(session.thumbnail_path(f)))
    out.print(table)
    for u in session.unusable:
        out.print(f"  [yellow]not usable:[/yellow] {u.describe()}", highlight=False)
    out.print(f"session saved in {target}")
    if contact_sheet is not None:
        out.print(f"contact sheet: {contact_sheet}")


_PER_FACE = {"--start-ms": "start_ms", "--end-ms": "end_ms", "--insert-ms": "insert_ms",
             "--volume": "volume", "--sync-mode": "sync_mode"}


def _face_specs(args: list[str], audio: Path | None) -> tuple[list[dict[str, object]], float]:
    """Parse ``--face ID=FILE`` groups; timing options apply to the face before them (or
    to the lone AUDIO when no --face is given). Returns specs and --original-volume."""
    specs: list[dict[str, object]] = []
    if audio is not None:
        specs.append({"face_id": None, "audio_path": audio})
    original = 1.0
    i = 0
    while i < len(args):
        opt = args[i]
        name, _, inline = opt.partition("=")
        if name not in (*_PER_FACE, "--face", "--original-volume"):
            raise typer.BadParameter(f"unknown option {opt}")
        if inline and name != "--face":
            value, i = inline, i + 1
        elif name == "--face" and "=" in opt[len("--face"):] and opt.startswith("--face="):
            value, i = opt[len("--face="):], i + 1
        else:
            if i + 1 >= len(args):
                raise typer.BadParameter(f"{name} needs a value")
            value, i = args[i + 1], i + 2
        if name == "--face":
            fid, sep, path = value.partition("=")
            if not sep or not fid or not path:
                raise typer.BadParameter(f"--face takes FACE_ID=AUDIO_FILE, got {value!r}")
            specs.append({"face_id": fid, "audio_path": Path(path)})
            continue
        if name == "--sync-mode":
            from lipdub.media.fit import SYNC_MODES

            if value not in SYNC_MODES:
                raise typer.BadParameter(
                    f"--sync-mode takes one of {', '.join(SYNC_MODES)}, got {value!r}")
            if not specs:
                raise typer.BadParameter("--sync-mode must follow AUDIO or a --face")
            specs[-1]["sync_mode"] = value
            continue
        try:
            number = float(value)
        except ValueError:
            raise typer.BadParameter(f"{name} takes a number, got {value!r}") from None
        if name == "--original-volume":
            original = number
        elif not specs:
            raise typer.BadParameter(f"{name} must follow AUDIO or a --face")
        else:
            specs[-1][_PER_FACE[name]] = number
    return specs, original


_PER_FACE_PANEL = "Per face (each applies to AUDIO or the --face before it)"
_help_only = typer.Typer(add_completion=False)


@_help_only.command()
def _sync_options(
    audio: Annotated[Path | None, typer.Argument(
        metavar="AUDIO", show_default=False,
        help="Audio for the most prominent face (or give --face instead).")] = None,
    face: Annotated[list[str] | None, typer.Option(
        "--face", metavar="FACE_ID=AUDIO", show_default=False,
        help="A face (from identify) and its audio; repeat for each face.")] = None,
    original_volume: Annotated[float, typer.Option(
        "--original-volume", metavar="0..2",
        help="Gain of the video's own sound.")] = 1.0,
    start_ms: Annotated[int, typer.Option(
        "--start-ms", metavar="MS", rich_help_panel=_PER_FACE_PANEL,
        help="Start of the clip inside the audio.")] = 0,
    end_ms: Annotated[int | None, typer.Option(
        "--end-ms", metavar="MS", rich_help_panel=_PER_FACE_PANEL, show_default=False,
        help="End of the clip inside the audio (default: its end).")] = None,
    insert_ms: Annotated[int, typer.Option(
        "--insert-ms", metavar="MS", rich_help_panel=_PER_FACE_PANEL,
        help="Where the clip starts on the video.")] = 0,
    volume: Annotated[float, typer.Option(
        "--volume", metavar="0..2", rich_help_panel=_PER_FACE_PANEL,
        help="Gain of the new audio.")] = 1.0,
    sync_mode: Annotated[str | None, typer.Option(
        "--sync-mode", metavar="cut_off|loop|bounce|silence|remap",
        rich_help_panel=_PER_FACE_PANEL, show_default=False,
        help="Fit audio that runs past the video's end or stops before it; without it "
        "such audio is refused, as by the API.")] = None,
) -> None:
    """Never run: its parameters are what `sync --help` shows of the options that sync
    parses itself, in order."""


class _SyncCommand(typer.core.TyperCommand):
    """sync reads AUDIO and the per-face options itself, in order (click cannot tie an
    option to the --face before it); its help shows them as the options they are."""

    # Any: typer vendors its own click, whose classes are private.
    def format_help(self, ctx: Any, formatter: Any) -> None:
        shown = typer.main.get_command(_help_only).params
        real = self.params
        self.params = [*real[:1], *shown[:1], *real[1:], *shown[1:]]
        try:
            super().format_help(ctx, formatter)
        finally:
            self.params = real


@app.command(
    cls=_SyncCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sync(
    ctx: typer.Context,
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video whose faces will speak.")],
    out_path: Annotated[Path, typer.Option("-o", "--out", help="Output mp4.")] = Path("out.mp4"),
    session_dir: Annotated[
        Path | None, typer.Option("--session", help="Reuse an identify result (its --out dir).")
    ] = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Write a before/after strip (JPEG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON summary.")] = False,
) -> None:
    """Make faces in VIDEO speak new audio (VIDEO AUDIO, or VIDEO --face ID=AUDIO ...).

    \b
    lipdub sync VIDEO AUDIO -o OUT.mp4      most prominent face, whole audio at 0
    lipdub sync VIDEO --face face_002=a.wav --insert-ms 1500 --face face_001=b.mp3 -o OUT.mp4
    """
    from lipdub.faces.identify import identify as run_identify
    from lipdub.faces.session import Session
    from lipdub.render.sync import FaceAudio
    from lipdub.render.sync import sync as run_sync

    try:
        # AUDIO and the per-face options are parsed here, in order: click cannot tie an
        # option to the --face before it.
        extra = list(ctx.args)
        audio = Path(extra.pop(0)) if extra and not extra[0].startswith("-") else None
        specs, original = _face_specs(extra, audio)
        if not specs:
            raise typer.BadParameter("give AUDIO, or one --face FACE_ID=AUDIO_FILE per face")
        _check_length(video)
        bar = not as_json and sys.stderr.isatty()
        with _progress("lip-syncing", enabled=bar) as cb:
            session = (Session.load(session_dir) if session_dir is not None
                       else run_identify(video, progress=lambda f: cb(0.3 * f)))
            first = session.faces[0].face_id
            faces = [FaceAudio(**{**spec, "face_id": spec["face_id"] or first})  # type: ignore[arg-type]
                     for spec in specs]
            base = 0.0 if session_dir is not None else 0.3
            result = run_sync(video, faces, out_path=out_path, session=session,
                              original_volume=original, preview_path=preview,
                              progress=lambda f: cb(base + (1 - base) * f))
    except typer.BadParameter as e:
        _fail(e)
        return
    except LipdubError as e:
        _fail(e)
        return
    if as_json:
        print(json.dumps(result.to_json()))
        return
    out.print(f"wrote {result.path}  ({result.frame_count} frames, "
              f"{result.duration_ms / 1000:.2f} s)")
    for note in result.notes:  # cuts, loops and stretches are never silent
        out.print(f"  [yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    for f in result.faces:
        out.print(f"  {f['face_id']}: {f.get('frames_changed', 0):.0f} frames re-rendered")
    if preview is not None:
        out.print(f"preview: {preview}")


def main() -> None:
    from lipdub.media.memory import tune_allocator

    tune_allocator()  # before any thread starts (see lipdub.media.memory)
    app()


if __name__ == "__main__":
    main()
