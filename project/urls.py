"""URL map: the admin console, the versioned API and its OpenAPI schema. Under /api/ even Django's
own 404 and 500 answer in the API's one error shape."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.autodiscover()  # SimpleAdminConfig (project/settings/base.py): the admin loads with the URLs

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.gateway.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="schema-ui"),
]

handler400 = "apps.gateway.errors.bad_request"
handler404 = "apps.gateway.errors.not_found"
handler500 = "apps.gateway.errors.server_error"
