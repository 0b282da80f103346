// Starts Swagger UI on callvault's own OpenAPI document. A file rather than an inline script, so
// the /docs page's Content-Security-Policy can allow script from 'self' only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    // The API key typed into "Authorize" lives in this page's memory only, never localStorage.
    persistAuthorization: false,
    // No validator badge: it would load an image from validator.swagger.io.
    validatorUrl: null,
  });
});
