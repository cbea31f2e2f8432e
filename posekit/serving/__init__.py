"""``posekit serve``: pose estimation as a web service (Starlette on uvicorn) with a browser page.

    from posekit.serving import ServeConfig, create_app
    app = create_app({"tfpose-mnv2": PoseEstimator("tfpose-mnv2", weights=...)}, ServeConfig())
    # uvicorn.run(app, host="127.0.0.1", port=8000)

See docs/serve.md for the routes, limits, errors and metrics.
"""

from posekit.serving.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
