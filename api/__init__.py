"""The HTTP API's parts, a module per job; `starter.py` puts them together.

- `routes`: the routes beyond the tutorial's `POST /book`
- `bookings`: the Temporal operations, raising domain errors
- `presenters`: a booking as the documented JSON
- `inputs`: reading a request's body and headers
- `access`: API keys, and who may call each route
- `errors`: the one place that turns failures into problem+json answers
- `contract`: the request and response models, and the OpenAPI document
- `loop`: the event loop that owns the Temporal client, where async views run
- `serving`: gunicorn
- `settings`: the API process's settings
"""
