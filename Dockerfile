# Timonier image: one image for every process (platform, api, worker, scheduler); the command and
# TIMONIER_SERVICE choose which. See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIMONIER_VAR_DIR=/app/var \
    MEDIA_ROOT=/data/media

WORKDIR /app

RUN groupadd --system timonier \
    && useradd --system --gid timonier --home-dir /app --no-create-home timonier

# Exactly the tested packages: every one pinned with its hashes (`make lock` writes the file), in a
# layer of its own that a code change does not rebuild.
COPY requirements.txt /app/
RUN pip install --require-hashes -r requirements.txt

COPY . /app
# Timonier itself, without dependencies (all locked above) and built by the locked setuptools.
# Editable, so that settings find templates/ and static/ beside the code in /app (a plain
# `pip install .` would import the copy in site-packages, whose parent has neither).
RUN pip install --no-deps --no-build-isolation -e . \
    && pip check \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && mkdir -p /app/var /data/media \
    && chown -R timonier:timonier /app/var /data

USER timonier

EXPOSE 3010 3030

# The platform UI; docker-compose.yml overrides the command for api, worker and scheduler.
ENV TIMONIER_SERVICE=platform
CMD ["sh", "-c", "exec gunicorn timonier.wsgi --bind 0.0.0.0:${PLATFORM_PORT:-3010} --workers 2 --threads 4 --access-logfile -"]
