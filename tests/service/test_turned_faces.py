"""Turned faces through the API, on a real `lipdub serve` with the real engine: the
identify result says where a face cannot be re-rendered and why (beside the contract's
fields, which are unchanged), and the lip-sync result says which frames it left as they
are."""

from __future__ import annotations

from pathlib import Path

from .helpers import MediaServer, Server, wait_task

GEN = "/api/v1/audio/generations"
VASP = "vasp__combine001.mp4"  # the left panel's head turns away and back
SPEECH = "videoretalking__audio_1.wav"


def test_turned_spans_are_reported_and_left_untouched(tmp_path: Path,
                                                      media_server: MediaServer) -> None:
    server = Server(tmp_path / "turned").start()
    try:
        api = server.client(server.new_key("turned", "1"))
        r = api.post(GEN, json={"model": "kling-identify-face",
                                "video_url": media_server.url(VASP)})
        assert r.status_code == 200, r.text
        task = wait_task(api, r.json()["data"]["taskId"], timeout=300)
        assert task["state"] == "completed", task
        data = task["faceData"]
        assert data["unusable"] == []  # the key is there: nobody is left out here
        faces = data["face_list"]
        assert len(faces) == 3
        for f in faces:  # the contract's fields as before
            assert {"face_id", "face_reference", "start_time", "end_time"} <= set(f)
        turned = [f for f in faces if f["not_renderable"]]
        assert len(turned) == 1, faces
        face = turned[0]
        spans = face["not_renderable"]
        assert all(s["reason"] == "turned" for s in spans)
        first = spans[0]
        assert 1300 <= first["start_time"] < first["end_time"] <= 4800

        # A 2-4.5 s clip of the speech ending past the turn (it fits in the video).
        ins = max(first["end_time"] + 300 - 4500, 0)
        end = max(2000, first["end_time"] + 300 - ins)
        r = api.post(GEN, json={
            "model": "kling-advanced-lip-sync", "session_id": data["session_id"],
            "face_choose": [{"face_id": face["face_id"], "sound_file": media_server.url(SPEECH),
                             "sound_end_time": end, "sound_insert_time": ins,
                             "sync_mode": "cut_off"}]})
        assert r.status_code == 200, r.text
        done = wait_task(api, r.json()["data"]["taskId"], timeout=300)
        assert done["state"] == "completed", done
        assert done["resultUrls"]
        said = [n for n in done["notes"] if "left as it is" in n]
        assert said, done["notes"]
        span = f"{first['start_time'] / 1000:.2f}-{first['end_time'] / 1000:.2f} s"
        assert any(span in n and "turned too far" in n and face["face_id"] in n
                   for n in said), said
    finally:
        server.kill()


def test_a_window_with_nothing_to_re_render_is_refused_before_it_is_charged() -> None:
    """The submission's check (the engine's, frame by frame, is behind it): refused only
    when turned and covered spans leave no visible moment of the window."""
    from lipdub.service.api.submission import _left_alone

    face = {"face_id": "face_001", "start_time": 0, "end_time": 6000,
            "segments": [[0, 3000], [4000, 6000]],
            "not_renderable": [{"start_time": 1000, "end_time": 2200, "reason": "turned"},
                               {"start_time": 2200, "end_time": 3000,
                                "reason": "mouth_covered"}]}
    assert _left_alone(face, 1000, 3000) == face["not_renderable"]
    assert _left_alone(face, 1200, 3900) == face["not_renderable"]  # 3000-4000 unseen
    assert _left_alone(face, 900, 3000) is None  # 900-1000 can be re-rendered
    assert _left_alone(face, 2500, 4200) is None  # 4000-4200 can
    assert _left_alone({"segments": [[0, 3000]]}, 0, 3000) is None  # older sessions
