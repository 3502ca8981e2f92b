"""One router per resource. New resources (sweeps, endpoints) add a module here and one
line in app.ROUTERS."""
