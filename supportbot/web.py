"""The satisfaction endpoint (issue 15, point 7): where the score links of satisfaction mails
point. A GET shows the score and one button; the POST of that button records it, so a mail
scanner that fetches every link gives no score. Served on `CSAT_LISTEN` while the service runs.
"""

from __future__ import annotations

import asyncio
import html
import logging

from aiohttp import web

from tickets.satisfaction import SCORES, Satisfaction, Scored

log = logging.getLogger(__name__)

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'>"
    "<meta name='viewport' content='width=device-width'><title>{title}</title></head>"
    "<body style='font-family:sans-serif;max-width:32em;margin:3em auto'>{body}</body></html>"
)
_SAID = {
    Scored.RECORDED: "Thank you! Your score for ticket #{ticket}: {score}/5.",
    Scored.ALREADY: "Your score for ticket #{ticket} was already counted. Thank you!",
    Scored.NOT_ASKED: "This link is not valid.",
}


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(text=text, status=status, content_type="text/html")


def score_app(satisfaction: Satisfaction) -> web.Application:
    """The HTTP application: `GET|POST /csat/{ticket}/{score}/{token}`."""

    def parsed(request: web.Request) -> tuple[int, int, str] | None:
        ticket, score = request.match_info["ticket"], request.match_info["score"]
        token = request.match_info["token"]
        if not (ticket.isdigit() and len(ticket) <= 10 and score.isdigit() and len(score) == 1):
            return None
        if not satisfaction.links.check(int(ticket), int(score), token):
            return None
        return int(ticket), int(score), token

    async def show(request: web.Request) -> web.Response:
        found = parsed(request)
        if found is None:
            return _page("Not valid", "<p>This link is not valid.</p>", 403)
        ticket, score, _ = found
        stars = "⭐" * score
        body = (
            f"<p>Ticket #{ticket}: give the score <b>{score}/5</b> {stars}?</p>"
            "<form method='post'><button type='submit'>Send my score</button></form>"
        )
        return _page("Your score", body)

    async def record(request: web.Request) -> web.Response:
        found = parsed(request)
        if found is None:
            return _page("Not valid", "<p>This link is not valid.</p>", 403)
        ticket, score, _ = found
        outcome = await satisfaction.record(ticket, score)
        status = 404 if outcome is Scored.NOT_ASKED else 200
        said = _SAID[outcome].format(ticket=ticket, score=score)
        return _page("Thank you", f"<p>{html.escape(said)}</p>", status)

    app = web.Application(client_max_size=4096)
    route = "/csat/{ticket}/{score}/{token}"
    app.router.add_get(route, show)
    app.router.add_post(route, record)
    assert SCORES == (1, 2, 3, 4, 5)
    return app


async def serve_scores(
    satisfaction: Satisfaction, host: str, port: int, stop: asyncio.Event
) -> None:
    """Serve the endpoint until `stop`."""
    runner = web.AppRunner(score_app(satisfaction), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("satisfaction links served on %s:%s", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
