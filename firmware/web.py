"""HTTP: microdot routes. For now the JSON status; the page and settings come with issue #6."""

from microdot import Microdot


def make_app(app):
    server = Microdot()

    @server.get("/api/status")
    async def status(request):
        return app.status()

    return server
