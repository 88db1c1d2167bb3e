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
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lipdub.errors import LipdubError
from lipdub.service.cli import register

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


def _fail(e: Exception) -> None:
    err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def identify(
    video: Annotated[Path, typer.Argument(help="Video file (mp4, mov, mkv, webm...).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Session directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
    contact_sheet: Annotated[
        Path | None, typer.Option("--contact-sheet", help="Write a JPEG of all faces.")
    ] = None,
) -> None:
    """Find every face in VIDEO: ids, visible segments, thumbnails."""
    from lipdub.faces.contact_sheet import contact_sheet as draw
    from lipdub.faces.identify import identify as run
    from lipdub.faces.session import Session

    try:
        sid = Session.new_id()
        target = out_dir or Path(".lipdub") / "sessions" / sid
        with _progress("identifying faces", enabled=not as_json and sys.stderr.isatty()) as cb:
            session = run(video, out_dir=target, progress=cb, session_id=sid)
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
                 "thumbnail": str(session.thumbnail_path(f))}
                for f in session.faces
            ],
        }))
        return
    v = session.video
    out.print(f"[bold]{session.session_id}[/bold]  {v.width}x{v.height}  {v.fps:g} fps  "
              f"{v.duration_ms / 1000:.2f} s  audio: {'yes' if v.has_audio else 'no'}")
    table = Table("face_id", "longest span", "segments", "thumbnail")
    for f in session.faces:
        segs = ", ".join(f"{a / 1000:.2f}-{b / 1000:.2f}s" for a, b in f.segments)
        table.add_row(f.face_id, f"{f.start_ms}-{f.end_ms} ms", segs,
                      str(session.thumbnail_path(f)))
    out.print(table)
    out.print(f"session saved in {target}")
    if contact_sheet is not None:
        out.print(f"contact sheet: {contact_sheet}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
